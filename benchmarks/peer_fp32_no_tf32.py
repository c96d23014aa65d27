"""The FP32 peer the GPU issue asks for: PyTorch ResNet-50 in FP32 with TF32 off (the shared
peer_torch.py allows TF32), eager and CUDA graph, NCHW and channels-last, random weights.

    python benchmarks/peer_fp32_no_tf32.py OUTDIR [--batch 256]   -> OUTDIR/peer_fp32_no_tf32.json

Run by benchmarks/gpu_vs_torch.py in the same call as the engine's own figures.
"""

import json
import os
import sys

import torch
import torchvision


def timed(fn, x, iters=20, warm=5) -> float:
    """Median milliseconds of fn(x), CUDA events."""
    for _ in range(warm):
        fn(x)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def graphed(model, x):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph, static = torch.cuda.CUDAGraph(), x.clone()
    with torch.cuda.graph(graph):
        y = model(static)
    return lambda _: (graph.replay(), y)[1]


def main() -> int:
    out = sys.argv[1]
    batch = int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 256
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    model = torchvision.models.resnet50(weights=None).eval().cuda()
    for layout in ("nchw", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        m = model.to(memory_format=fmt)
        x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=fmt)
        with torch.inference_mode():
            for mode, fn in (("eager", m), ("cudagraph", graphed(m, x))):
                ms = timed(fn, x)
                rows.append({"model": "resnet50", "dtype": "float32-no-tf32", "layout": layout, "mode": mode,
                             "bs": batch, "ms": ms, "ips": batch / ms * 1e3})
                print(rows[-1], flush=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "peer_fp32_no_tf32.json"), "w") as f:
        json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
