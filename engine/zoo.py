"""Image classifiers with seeded random weights, built with the Network API (nothing downloaded).

    graph = zoo.resnet50()                      # symbolic batch "N", 224x224, 1000 classes
    graph = zoo.get("googlenet", batch=1, image_size=64, seed=3)

The layouts are torchvision's, and so are the layer and weight names ("layer1.0.conv1.weight",
"layer1.0.bn1.running_var"), so a torchvision model can load these weights by name (ignoring
num_batches_tracked) and be compared with the engine layer by layer:

- resnet18/50/152: v1.5 (stride 2 on the bottleneck's 3x3 conv), BatchNorm after every conv,
  projection shortcut = 1x1 conv + BN.
- googlenet: torchvision's Inception v1 *with BatchNorm* (BasicConv2d = conv + BN(eps 1e-3) + ReLU,
  the "5x5" branch is a 3x3 conv as in torchvision, ceil-mode max pools), no aux heads, no
  transform_input.
- vgg19: torchvision's plain vgg19 (no BatchNorm).
- alexnet: torchvision's (the one-GPU variant, 64-192-384-256-256 channels, no LRN).
- inception_v3: torchvision's, 299x299 input, no aux logits, no transform_input.

Every graph has one input "input" (batch, 3, H, W) float32 and one output "logits"
(batch, num_classes). torchvision's adaptive average pools are written as GlobalAveragePool, or
as nothing where the feature map already has the target size (vgg19 and alexnet at 224); other
image sizes work where the feature map is a multiple of the target (see Network.adaptive_avg_pool).

Weights. Convs are He-initialised (normal, std sqrt(2 / fan_in)); the classifier is torch's default
Linear init (uniform +-1/sqrt(fan_in)); hidden linear layers (vgg, alexnet) are He-initialised
(uniform +-sqrt(6 / fan_in)). BatchNorm looks trained: gamma ~ N(1, 0.1) (0.2 N(1, 0.1) where it ends
a residual branch: see RESIDUAL_GAMMA), beta ~ gamma + N(0, 0.1) (N(0, 0.1) at a branch's end: see
ACTIVE_SHIFT), and running statistics measured on the activations the layer really sees. While a BN
model is defined, each layer also runs (through the engine's own numpy kernels) on a few random
unit-variance images at the model's image size, and each BN gets running_mean = measured mean + 0.1
std * N(0, 1) and running_var = measured var / U(0.5, 1.5). A BN then outputs about N(beta, gamma^2
* U(0.5, 1.5)) however deep it sits, as in a trained network, and activations stay in a sane range
through resnet152's residual stream (statistics that ignore how the stream grows let it compound
block by block: logits in the tens of thousands and a one-hot softmax). Measuring makes a BN model's
definition cost about one forward pass (resnet152 at 224: a few seconds); the weights depend on the
seed, and the running statistics on the seed and on the kernels' float32 rounding only.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from engine.ir import Graph
from engine.network import Network, Tensor
from kernels.cpu import CPU_OPS

NAMES = ("resnet18", "resnet50", "resnet152", "googlenet", "vgg19", "alexnet", "inception_v3")
OPSET = 17
GOOGLENET_MIN_SIZE = 31  # smaller inputs leave maxpool4 (2x2) nothing to pool
_BN_STATS_INPUTS = (3, 4)  # BatchNormalization's running mean and var: statistics, not parameters
# The BN that ends a residual branch scales its output to about 0.2 of the shortcut's, so a block
# refines the stream rather than replacing it, as in a trained ResNet (torchvision's
# zero_init_residual starts these gammas at 0). With gamma ~ 1 there, the random resnet50 at 64x64
# turned a 1e-3 relative input perturbation into a 7e-2 change of its logits (x72; x376 for
# resnet152, whose FP32 plan then missed 1e-4 on rounding alone); with 0.2, x3.4 and x14
# (benchmarks/zoo_conditioning.py, results/zoo_conditioning_cpu_2026-11-22.json).
RESIDUAL_GAMMA = 0.2
# Every other BN has beta ~ gamma * ACTIVE_SHIFT + N(0, 0.1): its ReLU sees N(gamma, gamma^2) and keeps
# about 84% of its units on. A random net whose BNs centre every channel and whose ReLUs cut half of
# it is chaotic: each conv-BN-ReLU multiplies a small relative change by about sqrt(P(z > b) /
# Var(relu(z))) for z ~ N(b, 1): 1.21 at b = 0, 1.06 at b = 1 (a mean-field estimate: random
# weights pass the change on, the BN removes the signal's mean, the ReLU gates both). With b = 0,
# googlenet amplified a 1e-3 input change x33, inception_v3 x41 and resnet152 x14, and their FP16
# plans missed 1e-2 on rounding alone; with b = 1, x4.1, x1.5 and x1.0
# (benchmarks/zoo_conditioning.py, results/zoo_conditioning_cpu_2026-11-22_active_shift.json).
ACTIVE_SHIFT = 1.0


def param_count(graph: Graph) -> int:
    """Trainable parameters, counted as torchvision counts them: BN running statistics excluded."""
    stats = {n.inputs[i] for n in graph.nodes if n.op_type == "BatchNormalization" for i in _BN_STATS_INPUTS}
    return int(sum(v.const.size for v in graph.constants() if v.name not in stats and v.const.dtype.kind == "f"))


def get(name: str, **kwargs) -> Graph:
    if name not in NAMES:
        raise ValueError(f"no zoo model named '{name}'; choose from {', '.join(NAMES)}")
    return globals()[name](**kwargs)


# -------------------------------------------------------------------- the weight factory


class _Builder:
    """A Network plus seeded weights.

    With `calibrate`, the builder also runs every layer as it is added (with the engine's own numpy
    kernels) on a small batch of random unit-variance images, so that each BatchNorm's running
    statistics can be set from the activations it really sees.
    """

    def __init__(self, name: str, seed: int, calibrate: bool):
        self.net = Network(name, opset=OPSET)
        self.rng = np.random.default_rng(seed)
        self.calibrate = calibrate
        self.seed = seed
        self.acts: dict[str, np.ndarray] = {}

    def input(self, batch: int | None, image_size: int, min_size: int) -> Tensor:
        if batch is not None and (not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1):
            raise ValueError(f"batch must be a positive integer or None (symbolic), got {batch!r}")
        if not isinstance(image_size, (int, np.integer)) or image_size < min_size:
            raise ValueError(f"{self.net.name}: image_size must be an integer >= {min_size}, got {image_size!r}")
        x = self.net.input("input", (None if batch is None else int(batch), 3, int(image_size), int(image_size)))
        if self.calibrate:
            # At the model's own size, since border effects change the statistics; more images at
            # small sizes, where the last feature maps have only a few pixels to average over.
            batch = int(np.clip(math.ceil((160 / image_size) ** 2), 1, 16))
            probe_rng = np.random.default_rng([self.seed, 1])  # apart from the weights' stream
            self.acts[x.name] = probe_rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32)
        return x

    def finish(self, logits: Tensor) -> Graph:
        self.net.output(logits, "logits")
        self.acts.clear()
        return self.net.graph()

    def _normal(self, shape, std: float) -> np.ndarray:
        a = self.rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(std)
        return a

    def _uniform(self, shape, bound: float) -> np.ndarray:
        a = self.rng.random(shape, dtype=np.float32)
        a *= np.float32(2.0 * bound)
        a -= np.float32(bound)
        return a

    def _run(self, y: Tensor, last_use: tuple[Tensor, ...] = ()) -> Tensor:
        """Compute y on the calibration batch, from activations computed earlier, then drop the
        inputs that no later layer reads (the callers know: a conv's output feeds only its BN)."""
        if not self.calibrate or y.name in self.acts:
            return y
        node = self.net.producer(y)
        kernel = CPU_OPS.lookup(node.op_type, OPSET, node.domain)
        args = [self.acts[i] if i in self.acts else self.net.constant(i) for i in node.inputs]
        with np.errstate(all="ignore"):
            result = kernel.fn(*args, **node.attrs)
        for name, array in zip(node.outputs, result if isinstance(result, tuple) else (result,)):
            self.acts[name] = array
        for t in last_use:
            self.acts.pop(t.name, None)
        return y

    def conv(self, x: Tensor, out_channels: int, kernel, *, stride=1, pad=0, bias: bool = False, name: str) -> Tensor:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        in_channels = x.shape[1]
        w = self._normal((out_channels, in_channels, kh, kw), math.sqrt(2.0 / (in_channels * kh * kw)))
        b = self._normal((out_channels,), 0.01) if bias else None
        return self._run(self.net.conv(x, w, b, stride=stride, pad=pad, name=name))

    def bn(self, x: Tensor, *, eps: float, name: str, ends_residual_branch: bool = False) -> Tensor:
        c = x.shape[1]
        gamma_mean, shift = (RESIDUAL_GAMMA, 0.0) if ends_residual_branch else (1.0, ACTIVE_SHIFT)
        gamma = gamma_mean * (1.0 + 0.1 * self.rng.standard_normal(c)).clip(0.5, 1.5)
        beta = shift * gamma + 0.1 * self.rng.standard_normal(c)
        jitter_mean = self.rng.standard_normal(c)
        jitter_var = self.rng.uniform(0.5, 1.5, c)
        if self.calibrate:
            a = self.acts[x.name].astype(np.float64)
            axes = (0,) + tuple(range(2, a.ndim))
            mean, var = a.mean(axes), a.var(axes)
            # Measured on few pixels (a small image's last layers), one channel's variance is noisy,
            # and dividing by noisy estimates inflates the output by E[1/estimate] > 1 at every
            # layer; so shrink towards the layer's mean variance, which many more samples support.
            samples = a.size // c
            var = (samples * var + 32 * var.mean()) / (samples + 32) + 1e-6
        else:
            mean, var = np.zeros(c), np.ones(c)
        running_mean = mean + 0.1 * np.sqrt(var) * jitter_mean
        running_var = var / jitter_var  # the output's variance gets a factor U(0.5, 1.5), of mean 1
        return self._run(self.net.batch_norm(x, gamma, beta, running_mean, running_var, eps=eps, name=name), (x,))

    def relu(self, x: Tensor, *, name: str) -> Tensor:
        return self._run(self.net.relu(x, name=name), (x,))

    def add(self, a: Tensor, b: Tensor, *, name: str) -> Tensor:
        return self._run(self.net.add(a, b, name=name), (a, b))

    def concat(self, parts: list[Tensor], *, name: str) -> Tensor:
        return self._run(self.net.concat(parts, axis=1, name=name))

    def max_pool(self, x: Tensor, kernel: int, stride: int, pad: int = 0, *, ceil_mode: bool = False,
                 name: str) -> Tensor:
        return self._run(self.net.max_pool(x, kernel, stride, pad, ceil_mode=ceil_mode, name=name))

    def avg_pool(self, x: Tensor, kernel: int, stride: int, pad: int, *, name: str) -> Tensor:
        return self._run(self.net.avg_pool(x, kernel, stride, pad, count_include_pad=True, name=name))

    def global_pool(self, x: Tensor, output_size: int, *, name: str) -> Tensor:
        """torchvision's AdaptiveAvgPool2d + flatten; nothing after it needs calibrating."""
        y = self.net.adaptive_avg_pool(x, output_size, name=name)
        return self.net.flatten(y, 1, name="flatten")

    def linear(self, x: Tensor, out_features: int, *, hidden: bool, name: str) -> Tensor:
        """A torch Linear, uniform-initialised: He (+-sqrt(6/fan_in)) when a ReLU follows, else
        torch's default (+-1/sqrt(fan_in)). Uniform, because the linear layers hold most of vgg's
        and alexnet's weights and uniform numbers are several times cheaper to draw than normal ones."""
        fan_in = x.shape[1]
        bound = math.sqrt(6.0 / fan_in) if hidden else 1.0 / math.sqrt(fan_in)
        w = self._uniform((out_features, fan_in), bound)
        b = self._uniform((out_features,), 0.01 if hidden else bound)
        return self.net.gemm(x, w, b, trans_b=True, name=name)

    def conv_bn_relu(self, x: Tensor, out_channels: int, kernel, *, stride=1, pad=0, eps: float = 1e-3,
                     name: str) -> Tensor:
        """torchvision's BasicConv2d (googlenet, inception_v3): '<name>.conv', '<name>.bn'."""
        y = self.conv(x, out_channels, kernel, stride=stride, pad=pad, name=f"{name}.conv")
        y = self.bn(y, eps=eps, name=f"{name}.bn")
        return self.relu(y, name=f"{name}.relu")


# -------------------------------------------------------------------- ResNet


def _basic_block(b: _Builder, x: Tensor, planes: int, stride: int, prefix: str) -> Tensor:
    y = b.relu(b.bn(b.conv(x, planes, 3, stride=stride, pad=1, name=f"{prefix}.conv1"), eps=1e-5,
                    name=f"{prefix}.bn1"), name=f"{prefix}.relu1")
    y = b.bn(b.conv(y, planes, 3, pad=1, name=f"{prefix}.conv2"), eps=1e-5, name=f"{prefix}.bn2",
             ends_residual_branch=True)
    return b.relu(b.add(y, _shortcut(b, x, planes, stride, prefix), name=f"{prefix}.add"), name=f"{prefix}.relu2")


def _bottleneck(b: _Builder, x: Tensor, planes: int, stride: int, prefix: str) -> Tensor:
    y = b.relu(b.bn(b.conv(x, planes, 1, name=f"{prefix}.conv1"), eps=1e-5, name=f"{prefix}.bn1"),
               name=f"{prefix}.relu1")
    y = b.relu(b.bn(b.conv(y, planes, 3, stride=stride, pad=1, name=f"{prefix}.conv2"), eps=1e-5,
                    name=f"{prefix}.bn2"), name=f"{prefix}.relu2")
    y = b.bn(b.conv(y, planes * 4, 1, name=f"{prefix}.conv3"), eps=1e-5, name=f"{prefix}.bn3",
             ends_residual_branch=True)
    return b.relu(b.add(y, _shortcut(b, x, planes * 4, stride, prefix), name=f"{prefix}.add"), name=f"{prefix}.relu3")


def _shortcut(b: _Builder, x: Tensor, channels: int, stride: int, prefix: str) -> Tensor:
    if stride == 1 and x.shape[1] == channels:
        return x
    y = b.conv(x, channels, 1, stride=stride, name=f"{prefix}.downsample.0")
    return b.bn(y, eps=1e-5, name=f"{prefix}.downsample.1")


def _resnet(name: str, block: Callable, expansion: int, depths: tuple[int, ...], batch, num_classes, seed,
            image_size) -> Graph:
    b = _Builder(name, seed, calibrate=True)
    x = b.input(batch, image_size, min_size=32)
    y = b.relu(b.bn(b.conv(x, 64, 7, stride=2, pad=3, name="conv1"), eps=1e-5, name="bn1"), name="relu")
    y = b.max_pool(y, 3, 2, 1, name="maxpool")
    for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        for index in range(depth):
            stride = 2 if stage > 1 and index == 0 else 1
            y = block(b, y, planes, stride, f"layer{stage}.{index}")
    assert y.shape[1] == 512 * expansion
    y = b.global_pool(y, 1, name="avgpool")
    return b.finish(b.linear(y, num_classes, hidden=False, name="fc"))


def resnet18(batch: int | None = None, num_classes: int = 1000, seed: int = 0, image_size: int = 224) -> Graph:
    return _resnet("resnet18", _basic_block, 1, (2, 2, 2, 2), batch, num_classes, seed, image_size)


def resnet50(batch: int | None = None, num_classes: int = 1000, seed: int = 0, image_size: int = 224) -> Graph:
    return _resnet("resnet50", _bottleneck, 4, (3, 4, 6, 3), batch, num_classes, seed, image_size)


def resnet152(batch: int | None = None, num_classes: int = 1000, seed: int = 0, image_size: int = 224) -> Graph:
    return _resnet("resnet152", _bottleneck, 4, (3, 8, 36, 3), batch, num_classes, seed, image_size)


# -------------------------------------------------------------------- GoogLeNet (Inception v1, with BN)


def _inception_v1(b: _Builder, x: Tensor, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, prefix) -> Tensor:
    branch1 = b.conv_bn_relu(x, ch1x1, 1, name=f"{prefix}.branch1")
    branch2 = b.conv_bn_relu(x, ch3x3red, 1, name=f"{prefix}.branch2.0")
    branch2 = b.conv_bn_relu(branch2, ch3x3, 3, pad=1, name=f"{prefix}.branch2.1")
    branch3 = b.conv_bn_relu(x, ch5x5red, 1, name=f"{prefix}.branch3.0")
    branch3 = b.conv_bn_relu(branch3, ch5x5, 3, pad=1, name=f"{prefix}.branch3.1")  # 3x3, as torchvision has it
    branch4 = b.max_pool(x, 3, 1, 1, ceil_mode=True, name=f"{prefix}.branch4.0")
    branch4 = b.conv_bn_relu(branch4, pool_proj, 1, name=f"{prefix}.branch4.1")
    return b.concat([branch1, branch2, branch3, branch4], name=f"{prefix}.concat")


_GOOGLENET_BLOCKS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def googlenet(batch: int | None = None, num_classes: int = 1000, seed: int = 0, image_size: int = 224) -> Graph:
    b = _Builder("googlenet", seed, calibrate=True)
    x = b.input(batch, image_size, min_size=GOOGLENET_MIN_SIZE)
    y = b.conv_bn_relu(x, 64, 7, stride=2, pad=3, name="conv1")
    y = b.max_pool(y, 3, 2, ceil_mode=True, name="maxpool1")
    y = b.conv_bn_relu(y, 64, 1, name="conv2")
    y = b.conv_bn_relu(y, 192, 3, pad=1, name="conv3")
    y = b.max_pool(y, 3, 2, ceil_mode=True, name="maxpool2")
    for block, widths in _GOOGLENET_BLOCKS.items():
        y = _inception_v1(b, y, *widths, prefix=block)
        if block == "inception3b":
            y = b.max_pool(y, 3, 2, ceil_mode=True, name="maxpool3")
        elif block == "inception4e":
            y = b.max_pool(y, 2, 2, ceil_mode=True, name="maxpool4")
    y = b.global_pool(y, 1, name="avgpool")
    return b.finish(b.linear(y, num_classes, hidden=False, name="fc"))


# -------------------------------------------------------------------- VGG19 and AlexNet


_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def vgg19(batch: int | None = None, num_classes: int = 1000, seed: int = 0, image_size: int = 224) -> Graph:
    b = _Builder("vgg19", seed, calibrate=False)
    y = b.input(batch, image_size, min_size=32)
    index = 0  # torchvision's index into `features`: conv, relu, ..., pool
    for item in _VGG19:
        if item == "M":
            y = b.max_pool(y, 2, 2, name=f"features.{index}")
            index += 1
        else:
            y = b.conv(y, item, 3, pad=1, bias=True, name=f"features.{index}")
            y = b.relu(y, name=f"features.{index + 1}")
            index += 2
    y = b.global_pool(y, 7, name="avgpool")
    y = b.relu(b.linear(y, 4096, hidden=True, name="classifier.0"), name="classifier.1")
    y = b.relu(b.linear(y, 4096, hidden=True, name="classifier.3"), name="classifier.4")
    return b.finish(b.linear(y, num_classes, hidden=False, name="classifier.6"))


def alexnet(batch: int | None = None, num_classes: int = 1000, seed: int = 0, image_size: int = 224) -> Graph:
    b = _Builder("alexnet", seed, calibrate=False)
    y = b.input(batch, image_size, min_size=63)
    y = b.relu(b.conv(y, 64, 11, stride=4, pad=2, bias=True, name="features.0"), name="features.1")
    y = b.max_pool(y, 3, 2, name="features.2")
    y = b.relu(b.conv(y, 192, 5, pad=2, bias=True, name="features.3"), name="features.4")
    y = b.max_pool(y, 3, 2, name="features.5")
    y = b.relu(b.conv(y, 384, 3, pad=1, bias=True, name="features.6"), name="features.7")
    y = b.relu(b.conv(y, 256, 3, pad=1, bias=True, name="features.8"), name="features.9")
    y = b.relu(b.conv(y, 256, 3, pad=1, bias=True, name="features.10"), name="features.11")
    y = b.max_pool(y, 3, 2, name="features.12")
    y = b.global_pool(y, 6, name="avgpool")
    y = b.relu(b.linear(y, 4096, hidden=True, name="classifier.1"), name="classifier.2")
    y = b.relu(b.linear(y, 4096, hidden=True, name="classifier.4"), name="classifier.5")
    return b.finish(b.linear(y, num_classes, hidden=False, name="classifier.6"))


# -------------------------------------------------------------------- Inception v3


def _inception_a(b: _Builder, x: Tensor, pool_features: int, p: str) -> Tensor:
    branch1x1 = b.conv_bn_relu(x, 64, 1, name=f"{p}.branch1x1")
    branch5x5 = b.conv_bn_relu(x, 48, 1, name=f"{p}.branch5x5_1")
    branch5x5 = b.conv_bn_relu(branch5x5, 64, 5, pad=2, name=f"{p}.branch5x5_2")
    dbl = b.conv_bn_relu(x, 64, 1, name=f"{p}.branch3x3dbl_1")
    dbl = b.conv_bn_relu(dbl, 96, 3, pad=1, name=f"{p}.branch3x3dbl_2")
    dbl = b.conv_bn_relu(dbl, 96, 3, pad=1, name=f"{p}.branch3x3dbl_3")
    pool = b.avg_pool(x, 3, 1, 1, name=f"{p}.avg_pool")
    pool = b.conv_bn_relu(pool, pool_features, 1, name=f"{p}.branch_pool")
    return b.concat([branch1x1, branch5x5, dbl, pool], name=f"{p}.concat")


def _inception_b(b: _Builder, x: Tensor, p: str) -> Tensor:
    branch3x3 = b.conv_bn_relu(x, 384, 3, stride=2, name=f"{p}.branch3x3")
    dbl = b.conv_bn_relu(x, 64, 1, name=f"{p}.branch3x3dbl_1")
    dbl = b.conv_bn_relu(dbl, 96, 3, pad=1, name=f"{p}.branch3x3dbl_2")
    dbl = b.conv_bn_relu(dbl, 96, 3, stride=2, name=f"{p}.branch3x3dbl_3")
    pool = b.max_pool(x, 3, 2, name=f"{p}.max_pool")
    return b.concat([branch3x3, dbl, pool], name=f"{p}.concat")


def _inception_c(b: _Builder, x: Tensor, c7: int, p: str) -> Tensor:
    branch1x1 = b.conv_bn_relu(x, 192, 1, name=f"{p}.branch1x1")
    b7 = b.conv_bn_relu(x, c7, 1, name=f"{p}.branch7x7_1")
    b7 = b.conv_bn_relu(b7, c7, (1, 7), pad=(0, 3), name=f"{p}.branch7x7_2")
    b7 = b.conv_bn_relu(b7, 192, (7, 1), pad=(3, 0), name=f"{p}.branch7x7_3")
    dbl = b.conv_bn_relu(x, c7, 1, name=f"{p}.branch7x7dbl_1")
    dbl = b.conv_bn_relu(dbl, c7, (7, 1), pad=(3, 0), name=f"{p}.branch7x7dbl_2")
    dbl = b.conv_bn_relu(dbl, c7, (1, 7), pad=(0, 3), name=f"{p}.branch7x7dbl_3")
    dbl = b.conv_bn_relu(dbl, c7, (7, 1), pad=(3, 0), name=f"{p}.branch7x7dbl_4")
    dbl = b.conv_bn_relu(dbl, 192, (1, 7), pad=(0, 3), name=f"{p}.branch7x7dbl_5")
    pool = b.avg_pool(x, 3, 1, 1, name=f"{p}.avg_pool")
    pool = b.conv_bn_relu(pool, 192, 1, name=f"{p}.branch_pool")
    return b.concat([branch1x1, b7, dbl, pool], name=f"{p}.concat")


def _inception_d(b: _Builder, x: Tensor, p: str) -> Tensor:
    b3 = b.conv_bn_relu(x, 192, 1, name=f"{p}.branch3x3_1")
    b3 = b.conv_bn_relu(b3, 320, 3, stride=2, name=f"{p}.branch3x3_2")
    b7 = b.conv_bn_relu(x, 192, 1, name=f"{p}.branch7x7x3_1")
    b7 = b.conv_bn_relu(b7, 192, (1, 7), pad=(0, 3), name=f"{p}.branch7x7x3_2")
    b7 = b.conv_bn_relu(b7, 192, (7, 1), pad=(3, 0), name=f"{p}.branch7x7x3_3")
    b7 = b.conv_bn_relu(b7, 192, 3, stride=2, name=f"{p}.branch7x7x3_4")
    pool = b.max_pool(x, 3, 2, name=f"{p}.max_pool")
    return b.concat([b3, b7, pool], name=f"{p}.concat")


def _inception_e(b: _Builder, x: Tensor, p: str) -> Tensor:
    branch1x1 = b.conv_bn_relu(x, 320, 1, name=f"{p}.branch1x1")
    b3 = b.conv_bn_relu(x, 384, 1, name=f"{p}.branch3x3_1")
    b3 = b.concat([b.conv_bn_relu(b3, 384, (1, 3), pad=(0, 1), name=f"{p}.branch3x3_2a"),
                   b.conv_bn_relu(b3, 384, (3, 1), pad=(1, 0), name=f"{p}.branch3x3_2b")], name=f"{p}.branch3x3_cat")
    dbl = b.conv_bn_relu(x, 448, 1, name=f"{p}.branch3x3dbl_1")
    dbl = b.conv_bn_relu(dbl, 384, 3, pad=1, name=f"{p}.branch3x3dbl_2")
    dbl = b.concat([b.conv_bn_relu(dbl, 384, (1, 3), pad=(0, 1), name=f"{p}.branch3x3dbl_3a"),
                    b.conv_bn_relu(dbl, 384, (3, 1), pad=(1, 0), name=f"{p}.branch3x3dbl_3b")],
                   name=f"{p}.branch3x3dbl_cat")
    pool = b.avg_pool(x, 3, 1, 1, name=f"{p}.avg_pool")
    pool = b.conv_bn_relu(pool, 192, 1, name=f"{p}.branch_pool")
    return b.concat([branch1x1, b3, dbl, pool], name=f"{p}.concat")


def inception_v3(batch: int | None = None, num_classes: int = 1000, seed: int = 0, image_size: int = 299) -> Graph:
    b = _Builder("inception_v3", seed, calibrate=True)
    x = b.input(batch, image_size, min_size=75)
    y = b.conv_bn_relu(x, 32, 3, stride=2, name="Conv2d_1a_3x3")
    y = b.conv_bn_relu(y, 32, 3, name="Conv2d_2a_3x3")
    y = b.conv_bn_relu(y, 64, 3, pad=1, name="Conv2d_2b_3x3")
    y = b.max_pool(y, 3, 2, name="maxpool1")
    y = b.conv_bn_relu(y, 80, 1, name="Conv2d_3b_1x1")
    y = b.conv_bn_relu(y, 192, 3, name="Conv2d_4a_3x3")
    y = b.max_pool(y, 3, 2, name="maxpool2")
    y = _inception_a(b, y, 32, "Mixed_5b")
    y = _inception_a(b, y, 64, "Mixed_5c")
    y = _inception_a(b, y, 64, "Mixed_5d")
    y = _inception_b(b, y, "Mixed_6a")
    y = _inception_c(b, y, 128, "Mixed_6b")
    y = _inception_c(b, y, 160, "Mixed_6c")
    y = _inception_c(b, y, 160, "Mixed_6d")
    y = _inception_c(b, y, 192, "Mixed_6e")
    y = _inception_d(b, y, "Mixed_7a")
    y = _inception_e(b, y, "Mixed_7b")
    y = _inception_e(b, y, "Mixed_7c")
    y = b.global_pool(y, 1, name="avgpool")
    return b.finish(b.linear(y, num_classes, hidden=False, name="fc"))
