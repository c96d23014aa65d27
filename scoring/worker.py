"""One worker's loop over its shards: load the plan once, then per shard read -> decode -> run the
engine -> write a part file -> record it in the manifest.

    metrics = score_shards(job, "model.plan", shards, worker_id=0)

`shards` may be any iterable, a list or a generator that asks a launcher for the next shard, so the
same loop serves the local launcher's dynamic queue, an MPI rank's fixed share and a Ray actor. A
shard already in the manifest is skipped, so a rerun of a killed job does only what is left. A
shard's part file appears (atomically) only when every one of its rows is written, and only then is
the shard recorded; a worker killed mid-shard leaves nothing of that shard behind.

Undecodable rows become error rows with null predictions; with [run] fail_fast the first one
stops the worker with a `BadRowError` naming the row, its shard and file.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Iterable


import engine as engine_api
from scoring.dataset import ImageDataset, Shard, open_dataset
from scoring.decode import CpuDecoder
from scoring.errors import ScoringError
from scoring.job import JobSpec
from scoring.outputs import Manifest, OutputSpec, PartWriter
from scoring.pipeline import DEFAULT_SLOTS, CpuRunner, HostRing, Prefetcher
from scoring.report import Metrics

log = logging.getLogger(__name__)


class BadRowError(ScoringError):
    """A row that could not be scored while [run] fail_fast is on."""


def open_job_dataset(job: JobSpec) -> ImageDataset:
    return open_dataset(job.data.source, image_column=job.data.image_column, id_column=job.data.id_column)


def resolve_decode_threads(job: JobSpec, workers_on_host: int = 1) -> int:
    """[run] decode_threads, with "auto" = this host's cores shared among its workers."""
    if job.run.decode_threads != "auto":
        return int(job.run.decode_threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers_on_host))


def score_shards(job: JobSpec, plan_path, shards: Iterable[Shard], worker_id: int | str = 0, *,
                 dataset: ImageDataset | None = None, device: str = "cpu", decode_threads: int | None = None,
                 on_batch: Callable[[int, int], None] | None = None,
                 on_shard: Callable[[str, Shard, dict], None] | None = None) -> Metrics:
    """Score every shard of `shards` not yet in the job's manifest; return this worker's Metrics.

    on_batch(rows, errors) is called after each batch is written (progress); on_shard(event, shard,
    info) with event "start" before a shard and "done" (info: rows, errors) once it is recorded."""
    metrics = Metrics(worker=worker_id, device=device, host=socket.gethostname())
    start = time.perf_counter()
    eng = engine_api.load(plan_path)
    runner = CpuRunner(eng, job.run.batch, job.preprocess)
    spec = job.output_spec(runner.num_classes)
    metrics.add_stage("load", time.perf_counter() - start)
    if dataset is None:
        dataset = open_job_dataset(job)
    manifest = Manifest(job.output.dir)
    done = manifest.done()
    threads = decode_threads if decode_threads is not None else resolve_decode_threads(job)
    ring = HostRing(DEFAULT_SLOTS, runner.capacity, job.preprocess.output_shape, job.preprocess.np_dtype)
    images = errors = 0
    with CpuDecoder(job.preprocess, threads) as decoder:
        for shard in shards:
            if shard.key in done:
                log.info("worker %s: %s already in the manifest, skipped", worker_id, shard.key)
                continue
            if on_shard is not None:
                on_shard("start", shard, {})
            rows, bad = _score_shard(job, dataset, shard, decoder, ring, runner, spec, manifest, metrics,
                                     images, errors, on_batch)
            images += rows
            errors += bad
            if on_shard is not None:
                on_shard("done", shard, {"rows": rows, "errors": bad})
    metrics.images, metrics.errors = images, errors
    metrics.finish()
    return metrics


def _score_shard(job: JobSpec, dataset: ImageDataset, shard: Shard, decoder: CpuDecoder, ring: HostRing,
                 runner: CpuRunner, spec: OutputSpec, manifest: Manifest, metrics: Metrics,
                 images_before: int, errors_before: int, on_batch) -> tuple[int, int]:
    rows = bad = 0
    with PartWriter(job.output.dir, shard.key, spec) as writer, \
            Prefetcher(dataset, shard, decoder, ring, job.run.batch) as batches:
        for slot in batches:
            failed = [i for i, e in enumerate(slot.errors) if e is not None]
            if failed and job.run.fail_fast:
                i = failed[0]
                raise BadRowError(
                    f"row with id {slot.ids[i]!r} (shard {shard.key}, {shard.file}) cannot be scored: "
                    f"{slot.errors[i]}. [run] fail_fast is on, so the job stops at the first bad row; set "
                    f"fail_fast = false to write such rows with an error message and carry on")
            with metrics.stage("compute"):
                scores = runner.run(slot) if len(failed) < slot.rows else None
            ids, errs, n = slot.ids, list(slot.errors), slot.rows
            batches.release(slot)  # the scores are a copy: the buffer may be refilled now
            with metrics.stage("write"):
                writer.add(ids, scores, errs)
            rows += n
            bad += len(failed)
            metrics.tick(images_before + rows, errors_before + bad)
            if on_batch is not None:
                on_batch(n, len(failed))
        for name, seconds in batches.stages.items():
            metrics.add_stage(name, seconds)
        with metrics.stage("write"):
            info = writer.close()
    manifest.record(info)
    if info.rows != shard.num_rows:  # pragma: no cover - read_shard guarantees it
        raise ScoringError(f"shard {shard.key}: {shard.num_rows} rows expected, {info.rows} written")
    return rows, bad
