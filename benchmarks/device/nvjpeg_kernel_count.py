"""How many kernels nvJPEG's batched hardware decode launches per batch, as the worker calls it
(scoring.nvjpeg_hardware.HardwareJpegDecoder: CREATE_FLAGS, interleaved RGB): run it under ncu,
which lists every kernel.

    ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file K.csv \
        python3 benchmarks/device/nvjpeg_kernel_count.py [--rows 256] [--batches 3]
    python3 benchmarks/device/nvjpeg_kernel_count.py --summarize K.csv   # kernels by name, per batch

The JPEGs are `batchscore make-data`'s synthetic ones (the benchmark's kind). A probe for the
device (issue #5, session 20), not part of batchscore.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def decode(rows: int, batches: int) -> dict:
    import cupy as cp
    import numpy as np
    import pyarrow.parquet as pq

    from scoring.decode_route import route_batch
    from scoring.make_data import make_dataset
    from scoring.nvjpeg_hardware import HardwareJpegDecoder

    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp) / "data", rows, row_groups=1, seed=0)
        table = pq.read_table(next((Path(tmp) / "data").rglob("*.parquet")), columns=["image"])
    data = [row["bytes"] for row in table.column("image").to_pylist()]
    # the rows, addresses and sizes as the worker's reader thread routes them
    chosen = route_batch(data, hardware=True, pixel_limit=None).hardware
    if len(chosen) != rows:
        raise SystemExit(f"only {len(chosen)} of {rows} synthetic JPEGs are hardware-decodable")
    pitches = 3 * chosen.widths
    sizes = chosen.heights * pitches
    out = cp.empty(int(sizes.sum()), cp.uint8)
    outputs = (out.data.ptr + np.cumsum(sizes) - sizes).astype(np.uint64)
    stream = cp.cuda.Stream(non_blocking=True)
    decoder = HardwareJpegDecoder()
    for _ in range(batches):
        decoder.decode(chosen.pointers, chosen.lengths, outputs, pitches.astype(np.uint64), stream.ptr)
        stream.synchronize()
    decoder.close()
    return {"rows": rows, "batches": batches, "flags": decoder.flags}


# ncu writes the unit long ("nsecond") or short ("ns"), by version
_MICROSECONDS_PER = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6,
                     "ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def summarize(path: Path, batches: int) -> dict:
    """Kernels by name in an ncu --csv log: launches, launches per batch, and total µs."""
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise ValueError(f"{path}: no ncu table (no line starts with \"ID\"): did ncu profile any kernel?")
    kernels: dict = defaultdict(lambda: {"launches": 0, "us": 0.0})
    ids = set()
    for row in csv.DictReader(lines[start:]):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = row["Kernel Name"][:90]
        ids.add(row["ID"])
        value = float(row["Metric Value"].replace(",", ""))
        kernels[name]["launches"] += 1
        kernels[name]["us"] += value * _MICROSECONDS_PER[row.get("Metric Unit", "usecond")]
    for entry in kernels.values():
        entry["per_batch"] = entry["launches"] / batches
        entry["us"] = round(entry["us"], 1)
    return {"kernels": dict(kernels), "total_launches": len(ids)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--summarize", type=Path, help="an ncu --csv log of a run of this script")
    args = parser.parse_args()
    result = summarize(args.summarize, args.batches) if args.summarize else decode(args.rows, args.batches)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
