"""How fast the scoring job's host-side I/O runs on the CPU: the part writer and the dataset reader.

    python benchmarks/outputs_io.py OUTDIR [--rows 20000] [--classes 1000] [--top-k 5]
                                           [--noise 5 --jpeg-quality 90-98]

- `writer`: --rows rows of random float32 logits (numpy, seed 0) with string ids like make_dataset's
  written as the worker writes them (scoring/shard_writer.py's ShardWriter): one PartWriter per
  shard of 4096 rows, add() per batch of 256 rows (top-k computed there), close(),
  Manifest.record(). Twice: top-k only, and top-k plus the raw score vectors ([output] raw =
  true). Then the GPU worker's case, an FP16 plan's float16 scores, top-k only: as they are now
  handed over (float16, ranked as they are: top_k_float16), and as they were until session 25 (each
  batch converted to float32 on the main loop first: top_k_float16_as_float32; the conversion is
  in the time). Rows/s is the median of 3 repeats, each into an empty OUTDIR/writer/<variant>;
  bytes are the part files' of the last one. `result_step_ms`: the main loop's copy of one batch of
  scores out of the output buffer (scoring.gpu_runner.GpuPending.result; an ordinary array here),
  float16 as it is against converted to float32, median of 200.
- `reader`: a JPEG Parquet dataset of --rows photo-like rows (make_dataset, seed 0, the layout of
  scoring_gpu_e2e.py: files of ~8k rows, row groups of ~1024), made once in OUTDIR/data and reused
  while OUTDIR/data.json matches (with --noise and --jpeg-quality, heavier files, as real photos of
  that size, in OUTDIR/data-detailed); open_dataset, then every shard of 4096 rows read with read_shard
  in batches of 256, as the worker's prefetch thread does (ids and encoded image bytes, not decoded).
  Rows/s and MB/s (image bytes, 1e6) are the median of 3 repeats, from the page cache (the files
  were just written or read).
- `reader_thread`: the same rows as a GPU worker's reader thread reads them (scoring.pipeline.Prefetcher:
  a shard's last rows share a batch with the next shard's first, and each batch is routed for the
  GPU decoders, scoring.decode_route), the decoding left out. Two variants, alternating, 3 repeats
  each: `resized`, as read_shard reads (Arrow asked for full batches after a shard's first one),
  and `not_resized` (Arrow kept at the first batch's size, as before session 27: the later batches
  straddle two of Arrow's and have their bytes copied). Per variant: rows/s (median), the reader
  thread's CPU per row (median) and how many batches came in more than one Arrow chunk.

Writes OUTDIR/outputs_io.json (date, command, machine, versions, parameters, figures) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring import row_group_reads  # noqa: E402
from scoring import encoded_items  # noqa: E402
from scoring.dataset import open_dataset, read_shard  # noqa: E402
from scoring.decode_route import route_batch  # noqa: E402
from scoring.pipeline import HostRing, Prefetcher  # noqa: E402
from scoring.manifest import Manifest  # noqa: E402
from scoring.outputs import OutputSpec, PartWriter  # noqa: E402
from launchers.make_data_cli import parse_noise, parse_quality  # noqa: E402
from scoring_gpu_e2e import SHARD_ROWS, data_detail, data_dir_name, host_cores, prepare_data  # noqa: E402

BATCH_ROWS = 256
REPEATS = 3
SEED = 0


def write_parts(out: Path, ids: np.ndarray, logits: np.ndarray, spec: OutputSpec, as_float32: bool = False) -> int:
    """The worker's writing of every shard: one part per SHARD_ROWS rows, BATCH_ROWS rows per add()
    (each batch converted to float32 first where `as_float32`). Returns the part files' bytes."""
    manifest = Manifest(out)
    written = 0
    for index, first in enumerate(range(0, len(ids), SHARD_ROWS)):
        writer = PartWriter(out, f"part-{index:05d}", spec)
        for start in range(first, min(first + SHARD_ROWS, len(ids)), BATCH_ROWS):
            stop = min(start + BATCH_ROWS, first + SHARD_ROWS, len(ids))
            scores = logits[start:stop].astype(np.float32) if as_float32 else logits[start:stop]
            writer.add(ids[start:stop], scores, [None] * (stop - start))
        info = writer.close()
        manifest.record(info)
        written += info.bytes
    return written


def time_writer(out: Path, rows: int, classes: int, k: int) -> dict:
    logits = np.random.default_rng(SEED).standard_normal((rows, classes), dtype=np.float32)
    ids = pa.array([f"img-{i:0{max(6, len(str(rows - 1)))}d}" for i in range(rows)]).to_numpy(zero_copy_only=False)
    half = logits.astype(np.float16)
    result = {}
    for name, raw, scores, as_float32 in (("top_k", False, logits, False), ("top_k_raw", True, logits, False),
                                          ("top_k_float16", False, half, False),
                                          ("top_k_float16_as_float32", False, half, True)):
        spec = OutputSpec(top_k=k, raw=raw, num_classes=classes)
        where = out / "writer" / name
        seconds = []
        for _ in range(REPEATS):
            shutil.rmtree(where, ignore_errors=True)
            start = time.perf_counter()
            size = write_parts(where, ids, scores, spec, as_float32)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        result[name] = {"raw": raw, "scores": str(scores.dtype), "converted_to_float32_per_batch": as_float32,
                        "rows_per_s": rows / median, "seconds": [round(s, 4) for s in seconds],
                        "bytes": size, "bytes_per_row": size / rows, "parts": -(-rows // SHARD_ROWS)}
        print(f"writer {name}: {rows / median:,.0f} rows/s, {size / 1e6:.2f} MB", flush=True)
    return result


def time_result_step(classes: int) -> dict:
    """The main loop's copy of one batch's scores out of the output buffer (an ordinary array stands
    in for the pinned one), ms, median of 200: as they are (float16), and converted to float32 as
    GpuPending.result did until session 25."""
    out = np.random.default_rng(SEED).standard_normal((BATCH_ROWS, classes)).astype(np.float16)
    timed = {}
    for name, copy in (("float16_copy", lambda: np.array(out)),
                       ("float32_conversion", lambda: np.array(out, dtype=np.float32))):
        seconds = []
        for _ in range(200):
            start = time.perf_counter()
            copy()
            seconds.append(time.perf_counter() - start)
        timed[name] = round(1e3 * statistics.median(seconds), 4)
    print(f"result step, a batch of {BATCH_ROWS} x {classes}: {timed} ms", flush=True)
    return timed


def read_all(data_dir: Path) -> tuple[int, int]:
    """Every shard read as the worker reads it; (rows, encoded image bytes)."""
    dataset = open_dataset(data_dir)
    rows = nbytes = 0
    for shard in dataset.shards(SHARD_ROWS):
        for batch in read_shard(dataset, shard, BATCH_ROWS):
            rows += len(batch)
            nbytes += sum(len(item) for item in batch.items if item is not None)
    return rows, nbytes


def time_reader(out: Path, rows: int, noise: float = 1.0, jpeg_quality: tuple[int, int] = (75, 95)) -> dict:
    made = prepare_data(out / data_dir_name(noise, jpeg_quality), rows, seed=SEED, noise=noise,
                        jpeg_quality=jpeg_quality)
    dataset = open_dataset(made["dir"])
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        got, nbytes = read_all(Path(made["dir"]))
        seconds.append(time.perf_counter() - start)
    if got != rows:
        raise RuntimeError(f"read {got} rows of the {rows} in {made['dir']}")
    median = statistics.median(seconds)
    print(f"reader: {rows / median:,.0f} rows/s, {nbytes / 1e6 / median:,.0f} MB/s", flush=True)
    return {"rows_per_s": rows / median, "mb_per_s": nbytes / 1e6 / median, "seconds": [round(s, 4) for s in seconds],
            "image_bytes": nbytes, "file_bytes": made["bytes"], "files": len(dataset.files),
            "row_groups": dataset.num_row_groups, "shards": len(dataset.shards(SHARD_ROWS)),
            "kind": dataset.kind, "data_dir": made["dir"], "data_reused": made["reused"],
            "data_make_s": made.get("seconds")}


class _RoutingOnly:
    """A GPU decoder's host side without the GPU: the reader routes each batch ahead for it
    (hardware decoder assumed there), and decoding writes nothing."""

    def route(self, items):
        return route_batch(items, hardware=True, pixel_limit=None)

    def decode_into(self, items, out, route=None):
        return [None] * len(items)


def _count_arrow_chunks(chunks: list):
    """EncodedItems.from_arrow, noting how many Arrow chunks each batch's column came in."""
    real = encoded_items.EncodedItems.from_arrow.__func__

    def from_arrow(cls, array):
        chunks.append(array.num_chunks if isinstance(array, pa.ChunkedArray) else 1)
        return real(cls, array)

    return classmethod(from_arrow)


def read_as_the_worker(data_dir: Path, resized: bool) -> dict:
    """Every shard through a Prefetcher's reader thread, as one GPU worker reads them."""
    dataset = open_dataset(data_dir)
    chunks: list[int] = []
    real_from_arrow, real_resize = encoded_items.EncodedItems.__dict__["from_arrow"], row_group_reads.resize_batches
    encoded_items.EncodedItems.from_arrow = _count_arrow_chunks(chunks)
    if not resized:
        row_group_reads.resize_batches = lambda pf, size: None
    try:
        ring = HostRing(4, BATCH_ROWS, (1,), np.uint8)
        rows = 0
        start = time.perf_counter()
        with Prefetcher(dataset, dataset.shards(SHARD_ROWS), [_RoutingOnly()], ring, BATCH_ROWS) as batches:
            for slot in batches:
                rows += slot.rows
        seconds = time.perf_counter() - start
    finally:
        encoded_items.EncodedItems.from_arrow = real_from_arrow
        row_group_reads.resize_batches = real_resize
    return {"rows": rows, "seconds": seconds, "read_cpu_s": batches.thread_cpu_s["read"], "batches": len(chunks),
            "batches_of_several_chunks": sum(n > 1 for n in chunks)}


def time_reader_thread(data_dir: Path, rows: int) -> dict:
    runs: dict[str, list[dict]] = {"resized": [], "not_resized": []}
    for _ in range(REPEATS):
        for name in runs:
            run = read_as_the_worker(data_dir, resized=name == "resized")
            if run["rows"] != rows:
                raise RuntimeError(f"the reader thread handed over {run['rows']} rows of the {rows} in {data_dir}")
            runs[name].append(run)
    figures = {}
    for name, done in runs.items():
        figures[name] = {
            "rows_per_s": rows / statistics.median(r["seconds"] for r in done),
            "read_cpu_us_per_row": 1e6 * statistics.median(r["read_cpu_s"] for r in done) / rows,
            "batches": done[0]["batches"],
            "batches_of_several_chunks": done[0]["batches_of_several_chunks"],
            "seconds": [round(r["seconds"], 4) for r in done],
        }
        print(f"reader thread, {name}: {figures[name]['rows_per_s']:,.0f} rows/s, "
              f"{figures[name]['read_cpu_us_per_row']:.1f} us of CPU a row, {figures[name]['batches_of_several_chunks']} "
              f"of {figures[name]['batches']} batches in several Arrow chunks", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--noise", type=parse_noise, default=1.0, help="the reader's images: make_dataset's noise")
    parser.add_argument("--jpeg-quality", type=parse_quality, default=(75, 95), metavar="LOW-HIGH",
                        help="the reader's images: make_dataset's JPEG quality range")
    args = parser.parse_args(argv)
    if min(args.rows, args.classes, args.top_k) < 1:
        parser.error("--rows, --classes and --top-k must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    writer = time_writer(args.out, args.rows, args.classes, args.top_k)
    result_step = time_result_step(args.classes)
    reader = time_reader(args.out, args.rows, args.noise, args.jpeg_quality)
    reader_thread = time_reader_thread(Path(reader["data_dir"]), args.rows)
    record = {
        "benchmark": "outputs_io",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python"] + (sys.argv if argv is None else [sys.argv[0], *argv])),
        "machine": {"kind": "cpu", "machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "usable_cores": host_cores(), "python": platform.python_version(), "numpy": np.__version__,
                    "pyarrow": pa.__version__},
        "parameters": {"rows": args.rows, "classes": args.classes, "top_k": args.top_k, "batch_rows": BATCH_ROWS,
                       "shard_rows": SHARD_ROWS, "repeats": REPEATS, "seed": SEED, **data_detail(args.noise, args.jpeg_quality)},
        "writer": writer,
        "result_step_ms": result_step,
        "reader": reader,
        "reader_thread": reader_thread,
        "total_s": round(time.perf_counter() - started, 1),
    }
    path = args.out / "outputs_io.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print()
    print(f"outputs_io: {args.rows:,} rows, {args.classes} classes, top {args.top_k}, batches of {BATCH_ROWS}, "
          f"shards of {SHARD_ROWS}, median of {REPEATS}")
    print(f"{'':32} {'rows/s':>10} {'MB/s':>8} {'MB':>8}")
    for name, w in writer.items():
        mb = w["bytes"] / 1e6
        print(f"{'writer ' + name:32} {w['rows_per_s']:>10,.0f} {mb * w['rows_per_s'] / args.rows:>8,.1f} {mb:>8.2f}")
    print(f"{'reader (JPEG bytes)':32} {reader['rows_per_s']:>10,.0f} {reader['mb_per_s']:>8,.1f} "
          f"{reader['image_bytes'] / 1e6:>8.2f}")
    for name, r in reader_thread.items():
        print(f"{'reader thread, ' + name:32} {r['rows_per_s']:>10,.0f} {'':>8} {'':>8}  {r['read_cpu_us_per_row']:.1f} us "
              f"of CPU a row, {r['batches_of_several_chunks']} of {r['batches']} batches copied")
    print(f"wrote {path} in {record['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
