"""How far the GPU decoders' rows are from CpuDecoder's (Pillow), per path: the hardware JPEG decoder
(nvJPEG batched, interpolated chroma upsampling unless $BATCHSCORE_NVJPEG_FLAGS says otherwise)
and nvImageCodec (fancy upsampling asked for). The bounds in tests/scoring/test_gpu_decode.py
(CLOSE) come from this.

    [BATCHSCORE_NVJPEG_FLAGS=none] python benchmarks/device/hardware_decode_diff.py [OUT]
        -> a line per (preprocess, image set, path), and OUT/hardware_decode_diff.json

Per image: the mean, the 99th percentile and the largest |GPU - CPU| after normalisation; each line
gives the largest of those over its images, and the mean of the means. Image sets: the test file's
photo sizes, a 64-row synthetic dataset with grayscale and EXIF-rotated rows (those take
nvImageCodec), and 512 rows of the scoring dataset.
"""
import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    import cupy

    from scoring import gpu_decode as gd
    from scoring.decode import CpuDecoder
    from scoring.make_data import make_dataset
    from tests.scoring.test_decode import photo
    from tests.scoring.test_gpu_decode import SETTINGS, SIZES, jpeg_bytes

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/hardware_decode_diff")
    sets = {"sizes": [jpeg_bytes(photo(w, h, seed=w)) for w, h in SIZES]
            + [jpeg_bytes(photo(375, 500, seed=12), subsampling=0)]}
    made = make_dataset(out / "mixed.parquet", 64, row_groups=1, column_kind="binary", grayscale=0.2,
                        exif_rotated=0.2, workers=1, overwrite=True)
    sets["dataset"] = pq.read_table(made.files[0]).column("image").to_pylist()
    made = make_dataset(out / "photos", 512, row_groups=1, workers=4, overwrite=True)
    sets["dataset512"] = [r["bytes"] for r in pq.read_table(made.files[0]).column("image").to_pylist()]
    rows = []
    for setting in ("default", "nhwc-fp16-bgr"):
        p = SETTINGS[setting]
        for name, items in sets.items():
            if setting != "default" and name == "dataset512":
                continue
            cpu, _ = CpuDecoder(p).decode(items)
            for hw in ("1", "0"):
                os.environ["BATCHSCORE_NVJPEG_HARDWARE"] = hw
                with gd.GpuDecoder(p) as dec:
                    got = cupy.zeros((len(items),) + p.output_shape, p.np_dtype)
                    dec.decode_into(items, got)
                    got = cupy.asnumpy(got)
                    taken = dec.hardware_images
                diff = np.abs(got.astype(np.float64) - cpu.astype(np.float64)).reshape(len(items), -1)
                means, maxs, p99 = diff.mean(1), diff.max(1), np.percentile(diff, 99, axis=1)
                rows.append({"preprocess": setting, "images": name, "hardware_path": hw == "1",
                             "taken_by_hardware": taken, "mean_max_over_images": float(means.max()),
                             "p99_max_over_images": float(p99.max()), "max": float(maxs.max()),
                             "mean_of_means": float(means.mean())})
                print(f"{setting:14s} {name:10s} hw={hw} taken={taken:3d} mean(max over imgs)={means.max():.4f} "
                      f"p99(max)={p99.max():.4f} max={maxs.max():.4f} mean-of-means={means.mean():.4f}", flush=True)
    from kernels.cuda.device import describe_gpu

    record = {"benchmark": "hardware_decode_diff",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": describe_gpu(), "command": "python " + " ".join(sys.argv),
              "nvjpeg_flags": os.environ.get("BATCHSCORE_NVJPEG_FLAGS", ""),
              "peer": "CpuDecoder (Pillow) on the same items, same process", "rows": rows}
    (out / "hardware_decode_diff.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
