"""The host's share of GPU decoding, per row, on the CPU (no GPU needed): reading a shard of JPEG
rows from Parquet (memory-mapped, as scoring.dataset reads, against a plain read), and choosing the
rows for the hardware JPEG decoder (scoring.jpeg_header_batch in numpy, against the scalar
jpeg_header.read_header on every row), on plain JPEGs and on JPEGs with an EXIF block.

    python benchmarks/host_decode_prep.py OUTDIR [--rows 8192] [--repeats 5]
        -> OUTDIR/host_decode_prep.json (the data is made under OUTDIR/data once)

Each figure is the best of --repeats passes, in microseconds per row; "peer" is the path it
replaced, measured in the same run. The read peer is pyarrow's ParquetFile.iter_batches without
memory_map alone; read_shard does that memory-mapped and also wraps each batch's rows as
EncodedItems.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH = 256


def best_us_per_row(run, rows: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return round(1e6 * best / rows, 2)


def read_figures(data: Path, repeats: int) -> dict:
    from scoring.dataset import open_dataset, read_shard

    dataset = open_dataset(data)
    shards = dataset.shards(1 << 30)
    rows = dataset.num_rows
    columns = [dataset.image_column] + ([dataset.id_column] if dataset.id_column else [])

    def plain():  # what read_shard did before: ParquetFile without memory_map
        for shard in shards:
            for _ in pq.ParquetFile(shard.file).iter_batches(batch_size=BATCH, columns=columns):
                pass

    def landed():
        for shard in shards:
            for _ in read_shard(dataset, shard, BATCH):
                pass

    return {"rows": rows, "read_shard_us_per_row": best_us_per_row(landed, rows, repeats),
            "peer_plain_parquet_read_us_per_row": best_us_per_row(plain, rows, repeats)}


def header_figures(blobs: list[bytes], repeats: int) -> dict:
    from scoring import jpeg_header_batch as jb
    from scoring.encoded_items import EncodedItems
    from scoring.jpeg_header import hardware_decodable, read_header

    batches = [EncodedItems.from_list(blobs[i:i + BATCH]) for i in range(0, len(blobs), BATCH)]
    numpy_way = [jb.hardware_decodable_rows(b.data, b.starts, b.ends)[0] for b in batches]
    scalar_way = [hardware_decodable(read_header(blob)) for blob in blobs]
    assert np.concatenate(numpy_way).tolist() == scalar_way  # the same decisions, or no figures

    def batch():
        for b in batches:
            jb.hardware_decodable_rows(b.data, b.starts, b.ends)

    def scalar():
        for blob in blobs:
            hardware_decodable(read_header(blob))

    return {"rows": len(blobs), "to_hardware": int(sum(scalar_way)),
            "jpeg_header_batch_us_per_row": best_us_per_row(batch, len(blobs), repeats),
            "peer_scalar_read_header_us_per_row": best_us_per_row(scalar, len(blobs), repeats)}


def exif_blobs(count: int) -> list[bytes]:
    """Photo-like JPEGs with an EXIF block, half upright and half rotated."""
    import io

    from PIL import Image

    from tests.scoring.test_decode import exif_with_orientation, photo

    blobs = []
    for k in range(count):
        buffer = io.BytesIO()
        Image.fromarray(photo(500, 375, seed=k % 16)).save(buffer, "JPEG", quality=90,
                                                              exif=exif_with_orientation(1 + 5 * (k % 2)))
        blobs.append(buffer.getvalue())
    return blobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from scoring.dataset import open_dataset
    from scoring.decode import available_cores
    from scoring.encoded_items import EncodedItems
    from scoring.make_data import make_dataset

    data = args.out / "data"
    if not data.exists():
        make_dataset(data, rows=args.rows, row_groups=8, files=1)
    dataset = open_dataset(data)
    table = pq.read_table(dataset.files[0], columns=[dataset.image_column])
    plain = list(EncodedItems.from_arrow(pc.struct_field(table.column(dataset.image_column), "bytes")))
    record = {
        "benchmark": "host_decode_prep",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": {"kind": "cpu", "machine": platform.machine(), "cores": available_cores(),
                   "python": platform.python_version(), "numpy": np.__version__,
                   "pyarrow": pa.__version__},
        "command": "python " + " ".join(sys.argv),
        "data": f"make_dataset(rows={dataset.num_rows}, row_groups=8): synthetic photo-like JPEGs, "
                f"{np.mean([len(b) for b in plain]) / 1e3:.1f} kB on average",
        "read": read_figures(data, args.repeats),
        "headers": header_figures(plain, args.repeats),
        "headers_with_exif": header_figures(exif_blobs(1024), args.repeats),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host_decode_prep.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
