"""What every launcher does the same way: find the shards still to score, stop with the resume
message when workers failed, and describe the job for the report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from scoring.errors import ScoringError


class WorkerFailed(ScoringError):
    """A worker (process, rank or actor) died or raised; finished shards stay recorded."""


@dataclasses.dataclass
class PendingWork:
    out_dir: Path
    dataset: object
    shards: list
    done: set
    todo: list
    manifest_path: Path


def pending_work(job) -> PendingWork:
    """Open the job's dataset, cut it into shards, and list those the manifest does not have yet."""
    from launchers.local import _check_same_sharding
    from scoring.manifest import Manifest
    from scoring.worker import open_job_dataset

    out_dir = Path(job.output.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = open_job_dataset(job)
    shards = dataset.shards(job.data.shard_rows)
    _check_same_sharding(out_dir, dataset, shards, job.data.shard_rows)
    manifest = Manifest(out_dir)
    manifest.compact()  # journals a killed worker left behind; no worker records yet
    done = manifest.done()
    _remove_stale_temps(out_dir)
    return PendingWork(out_dir, dataset, shards, done, [s for s in shards if s.key not in done], manifest.path)


def _remove_stale_temps(out_dir: Path) -> None:
    """A worker killed mid-shard leaves its part's hidden temp file; the rerun scores that shard
    again under a new temp name, so the old one is only clutter. Finished parts are never temps."""
    from scoring.manifest import PARTS_DIR

    for stale in (out_dir / PARTS_DIR).glob(".*.parquet.*.tmp"):
        stale.unlink(missing_ok=True)


def nothing_to_do(work: PendingWork, quiet: bool) -> None:
    if not quiet:
        print(f"all {len(work.shards)} shards of {work.dataset.num_rows} rows are already in "
              f"{work.manifest_path}; nothing to do")


def shards_named(keys) -> str:
    """The shards a message is about: "shard part-00003" or "shards part-00003, part-00004"."""
    keys = list(keys)
    return f"shard{'s' * (len(keys) != 1)} {', '.join(keys)}"


def end_of_workers(failures: list[str], out_dir: Path, total: int) -> None:
    """Every worker has ended: fold their manifest journals into manifest.json (only now does no
    worker append to one); then, if some failed, say which, how much is safely done, and that a
    rerun resumes."""
    from scoring.manifest import Manifest

    manifest = Manifest(out_dir)
    manifest.compact()
    if not failures:
        return
    finished = len(manifest.done())
    raise WorkerFailed(" ".join(failures) + f" {finished} of {total} shards are finished and recorded in "
                       f"{manifest.path}; run the same command again to score the remaining {total - finished}.")


def job_info(job, work: PendingWork, plan_path, launcher: str, device: str, started: float, **extra) -> dict:
    """The job's description at the top of its report."""
    return {
        "name": Path(job.path).stem if job.path else "job",
        "job_file": str(job.path) if job.path else None,
        "model": str(job.model.path),
        "plan": str(plan_path),
        "source": work.dataset.source,
        "rows": work.dataset.num_rows,
        "shards": len(work.shards),
        "shards_this_run": len(work.todo),
        "shards_resumed": len(work.done),
        "launcher": launcher,
        "device": device,
        "batch": job.run.batch,
        **extra,
        "started_at": started,  # epoch seconds at launch: workers' first batches are timed from it
        "wall_s": time.time() - started,
        "output_dir": str(work.out_dir),
    }
