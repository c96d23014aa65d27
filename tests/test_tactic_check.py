"""engine/tactic_check: a tuned tactic's output against the layer's numpy kernel, on the first images
of the batch (numpy arrays stand in for the device's; the GPU path is tests/gpu/test_gpu_backend.py)."""

import numpy as np
import pytest

from engine.tactic_check import CHECK_IMAGES, FP16_BOUND, FP32_BOUND, bound_for, host_inputs, numpy_error
from kernels.cpu import CPU_OPS

CONV = CPU_OPS.by_key("batchscore:FusedConv-1")
ATTRS = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1,
             activation="Relu", residual=1)
BATCH = 6


def _layer(rng, splits=()):
    x = rng.standard_normal((BATCH, 3, 8, 8)).astype(np.float16)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    z = rng.standard_normal((BATCH, 5, 8, 8)).astype(np.float16)
    attrs = dict(ATTRS, output_splits=list(splits))
    host = host_inputs([x, w, b, z], [True, False, False, True], BATCH)
    # what a correct FP16 tactic writes: the whole batch, rounded to float16
    whole = CONV.fn(*[a.astype(np.float32) for a in (x, w, b, z)], **attrs)
    outputs = [np.asarray(o).astype(np.float16) for o in (whole if isinstance(whole, tuple) else (whole,))]
    return attrs, host, outputs


def test_a_correct_fp16_output_is_within_the_bound_and_a_wrong_one_is_not():
    attrs, host, (y,) = _layer(np.random.default_rng(0))
    error = numpy_error(CONV, attrs, host, [y])
    assert 0 < error < FP16_BOUND
    wrong = y.copy()
    wrong[0, 2] = 0  # one channel of the first image lost: another engine's bug
    assert numpy_error(CONV, attrs, host, [wrong]) > FP16_BOUND


def test_only_the_first_images_are_checked():
    attrs, host, (y,) = _layer(np.random.default_rng(1))
    wrong = y.copy()
    wrong[CHECK_IMAGES:] = 0  # beyond what numpy checks: not seen (the price of a fast build)
    assert numpy_error(CONV, attrs, host, [wrong]) < FP16_BOUND
    assert host[0].shape[0] == host[3].shape[0] == CHECK_IMAGES and host[1].shape == (5, 3, 3, 3)


def test_every_split_output_is_compared():
    attrs, host, outputs = _layer(np.random.default_rng(2), splits=(2, 3))
    assert len(outputs) == 2 and numpy_error(CONV, attrs, host, outputs) < FP16_BOUND
    outputs[1] = -outputs[1]
    assert numpy_error(CONV, attrs, host, outputs) > FP16_BOUND


def test_host_inputs_widen_float16_and_leave_non_batch_arrays_whole():
    table = np.ones((3, 4), np.float16)  # an activation whose first axis is not the batch
    host = host_inputs([np.zeros((BATCH, 2), np.float16), table, None], [True, True, False], BATCH)
    assert host[0].shape == (CHECK_IMAGES, 2) and host[0].dtype == np.float32
    assert host[1].shape == (3, 4) and host[2] is None


@pytest.mark.parametrize("dtypes, tf32, bound", [
    ([np.float16], False, FP16_BOUND), ([np.float32], True, FP16_BOUND), ([np.float32], False, FP32_BOUND),
])
def test_bound_for(dtypes, tf32, bound):
    assert bound_for(dtypes, tf32) == bound


class _Runner:
    """A layer kernel with two tactics, as tuning drives it: tactic 0 writes the wrong answer."""

    def __init__(self, args, out, wrong_tactics):
        self.args, self.out, self.wrong, self.index = args, out, wrong_tactics, None

    def select(self, index):
        self.index = index

    @property
    def tactic(self):
        return f"cudnn:{self.index}:eng{self.index}"

    def __call__(self):
        result = CONV.fn(*[a.astype(np.float32) for a in self.args], **ATTRS)
        self.out[...] = 0 if self.index in self.wrong else result


def _tune(wrong_tactics):
    from engine.tactic_check import agreeing_tactic

    rng = np.random.default_rng(3)
    x = rng.standard_normal((BATCH, 3, 8, 8)).astype(np.float16)
    z = rng.standard_normal((BATCH, 5, 8, 8)).astype(np.float16)
    weights = {"w": rng.standard_normal((5, 3, 3, 3)).astype(np.float16), "b": np.zeros(5, np.float16)}
    out = np.empty((BATCH, 5, 8, 8), np.float16)
    layer = {"name": "layer1.0.conv2", "kind": "FusedConv", "kernel": "batchscore:FusedConv-1",
             "inputs": ["x", "w", "b", "z"]}
    runner = _Runner([x, weights["w"], weights["b"], z], out, wrong_tactics)
    io = (ATTRS, [x, None, None, z], [out])  # as the bucket binds them: weights are not device inputs
    return agreeing_tactic(runner, ["cudnn:0", "cudnn:1"], layer, io, weights, BATCH, False, lambda: None, np.asarray)


def test_tuning_skips_a_tactic_that_disagrees_with_numpy(caplog):
    tactic, error = _tune(wrong_tactics={0})
    assert tactic == "cudnn:1" and error < FP16_BOUND
    assert "layer1.0.conv2: tactic cudnn:0:eng0 differs from the numpy kernel" in caplog.text


def test_no_tactic_matching_numpy_is_a_build_error_naming_the_layer():
    from engine.errors import BuildError

    with pytest.raises(BuildError, match=r"layer 'layer1.0.conv2' \(FusedConv\): no tactic matches the numpy "
                                         r"kernel .* cudnn:0 1\.0e\+00, cudnn:1 1\.0e\+00"):
        _tune(wrong_tactics={0, 1})
