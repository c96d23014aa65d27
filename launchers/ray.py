"""The Ray launcher: one actor per GPU of a Ray cluster (CPU actors where there is none).

    batchscore run job.toml --launcher ray                      # joins $RAY_ADDRESS / a running cluster, else starts one
    batchscore run job.toml --launcher ray --address HOST:6379  # a given cluster
    ray job submit --working-dir . -- batchscore run jobs/x.toml --launcher ray    # see jobs/ray_submit.sh

The driver (this process; under `ray job submit` the job's entrypoint on the head node):

1. connects: to --address, else to $RAY_ADDRESS (set inside a Ray Job), else to a cluster
   already running on this host (address="auto"), else it starts a local one (and stops it at
   the end);
2. takes the plan (or builds it once from the job's ONNX model: on the driver when the driver
   can, else in a one-GPU Ray task) and puts the plan file's bytes in the object store once;
   every actor writes them to a node-local file and loads the engine from it;
3. opens the dataset, cuts it into shards, drops those the manifest lists (a rerun resumes), and
   starts N actors: `num_gpus=1` each on a GPU cluster (N = [run] workers or --workers, "auto" =
   the cluster's GPUs), else `num_cpus=1` CPU actors ("auto" = half the cluster's CPUs);
4. drives a shard queue: each idle actor gets the next shard (`actor.score.remote(shard)`), and
   `ray.wait` over the shards in flight hands the next one to whichever actor finishes first,
   so a slow actor takes fewer shards;
5. gathers each actor's Metrics (`to_dict`) and writes the report.

An actor that dies (SIGKILL, the OOM killer, a lost node: `RayActorError`) is replaced by a new
actor, and the shard it held goes back to the front of the queue. Output stays exactly-once:
part files are written atomically by shard key (a dead actor leaves at most a hidden temp file,
which readers ignore), and a shard is recorded in the manifest only once its part is complete.
A shard whose actor dies `max_retries` times (3) fails the job. An actor that raises (a bad row
with fail_fast, a bug) stops the hand-out; the job then fails with its message once the shards
in flight are finished, and a rerun does only the rest.

The output directory (and the data) must be reachable from every node at the same path: a
shared filesystem, or one node. Actors import batchscore, so it must be installed on the nodes
or shipped with the job (`ray job submit --working-dir .`).

`EngineMapper` scores images inside a Ray Data pipeline instead:

    ds = ray.data.read_parquet("images/")
    ds = ds.map_batches(EngineMapper, fn_constructor_kwargs={"plan_path": "model.plan"},
                        batch_format="numpy", batch_size=64, concurrency=2)
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.errors import BatchscoreError
from scoring.errors import JobError

from launchers.common import job_info, nothing_to_do, pending_work, raise_if_failed
from launchers.local import _plan_for

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # times a shard is handed out again after the actor scoring it died


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise JobError(f"the ray launcher needs Ray ({exc}); install it with `pip install 'batchscore[ray]'`") from None
    return ray


# ---------------------------------------------------------------------------------------------
# The actor
# ---------------------------------------------------------------------------------------------


def _plan_file(plan_bytes: bytes, digest: str) -> Path:
    """The plan written once per node (atomically), named by its sha256."""
    folder = Path(tempfile.gettempdir()) / "batchscore-plans"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.plan"
    if not path.is_file() or path.stat().st_size != len(plan_bytes):
        fd, temp = tempfile.mkstemp(prefix=f".{digest}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(plan_bytes)
        os.replace(temp, path)
    return path


def _node_resources() -> dict:
    import ray

    node = ray.get_runtime_context().get_node_id()
    for n in ray.nodes():
        if n.get("NodeID") == node:
            return n.get("Resources", {})
    return {}


class ShardScorer:
    """One worker: loads the plan once, then scores the shards it is given, one `score` call each.

    score_shards (scoring/worker.py) runs on a thread of the actor for the actor's whole life,
    fed from a queue, so the engine is loaded once and the loop is the one every launcher uses."""

    def __init__(self, job, plan_bytes: bytes, digest: str, worker_id: int, device: str, dataset,
                 decode_threads: int | str):
        self.job, self.worker_id, self.dataset = job, worker_id, dataset
        self.host = socket.gethostname()
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        try:
            self.plan_path = _plan_file(plan_bytes, digest)
        except OSError as exc:
            self.plan_path = None
            self.outbox.put(("error", f"worker {worker_id} ({self.host}) cannot write the plan to a local "
                                      f"file: {exc}"))
            return
        if decode_threads == "auto":
            if device == "cuda":
                res = _node_resources()
                decode_threads = max(1, int(res.get("CPU", os.cpu_count() or 1) // max(1, res.get("GPU", 1))))
            else:
                decode_threads = 1
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES") if device == "cuda" else None
        self.device = f"cuda:{gpus}" if gpus else device
        self.threads = int(decode_threads)
        self.thread = threading.Thread(target=self._loop, name="batchscore-scorer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        from scoring.worker import score_shards

        def on_shard(event, shard, info):
            if event == "done":
                self.outbox.put(("done", shard.key, info["rows"], info["errors"]))

        try:
            m = score_shards(self.job, self.plan_path, iter(self.inbox.get, None), self.worker_id,
                             dataset=self.dataset, device=self.device, decode_threads=self.threads,
                             on_shard=on_shard)
            self.outbox.put(("metrics", m.to_dict()))
        except BatchscoreError as exc:
            self.outbox.put(("error", f"worker {self.worker_id} ({self.host}) stopped: {exc}"))
        except BaseException:
            self.outbox.put(("error", f"worker {self.worker_id} ({self.host}) failed with an unexpected error "
                                      f"(a bug in batchscore):\n{traceback.format_exc()}"))

    def score(self, shard):
        """Score one shard; ("done", key, rows, errors) or ("error", message)."""
        from scoring.outputs import Manifest

        if self.plan_path is None:
            return self.outbox.get()
        part = Manifest(self.job.output.dir).parts().get(shard.key)
        if part is not None:  # finished by an actor that died before it could say so
            return ("done", shard.key, part.rows, part.errors)
        self.inbox.put(shard)
        return self.outbox.get()

    def finish(self):
        """Stop; ("metrics", Metrics.to_dict()) or ("error", message)."""
        if self.plan_path is None:
            return self.outbox.get()
        self.inbox.put(None)
        return self.outbox.get()

    def pid(self) -> int:
        return os.getpid()


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


def _connect(ray, address: str | None, quiet: bool) -> bool:
    """Join or start a cluster; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    level = logging.WARNING if quiet else logging.INFO
    if address:
        try:
            ray.init(address=address, logging_level=level)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise JobError(f"cannot join the Ray cluster at {address}: {exc}") from None
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=level)
        return False
    try:
        ray.init(address="auto", logging_level=level)
        return False
    except ConnectionError:
        pass
    ray.init(include_dashboard=False, logging_level=level)
    return True


def run_ray(job, workers: int | str | None = None, quiet: bool = False, plan: str | os.PathLike | None = None,
            address: str | None = None, max_retries: int = MAX_RETRIES):
    """Run a job on a Ray cluster; return the scoring.report.Report, or None when the manifest
    already lists every shard. `workers` overrides [run] workers, `plan` overrides [model]."""
    ray = _import_ray()
    started_here = _connect(ray, address, quiet)
    try:
        return _run(ray, job, workers, quiet, plan, max_retries)
    finally:
        if started_here:
            ray.shutdown()


def _cluster_device(ray, job) -> str:
    if job.run.device != "auto":
        return job.run.device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def _plan(ray, job, out_dir: Path, plan, device: str, quiet: bool) -> tuple[Path, str]:
    """Like the local launcher's, but a GPU plan is built in a one-GPU task when the driver (the
    head node, often) has no GPU of its own."""
    from launchers.local import _gpu_count

    if plan is not None or job.model.plan is not None or device == "cpu" or _gpu_count() > 0:
        return _plan_for(replace(job, run=replace(job.run, device=device)), out_dir, plan, quiet)
    onnx = Path(job.model.onnx)
    path = out_dir / f"{onnx.stem}.{device}.{job.model.precision}.b{job.max_batch}.plan"
    if path.is_file() and path.stat().st_mtime >= onnx.stat().st_mtime:
        if not quiet:
            print(f"using the plan built before: {path}")
        return path, device

    def build(model: bytes, precision: str, max_batch: int) -> bytes:
        import engine

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "model.onnx"
            src.write_bytes(model)
            out = Path(tmp) / "model.plan"
            engine.build(str(src), engine.BuildConfig(precision=precision, max_batch=max_batch,
                                                      device="cuda")).save(out)
            return out.read_bytes()

    start = time.perf_counter()
    task = ray.remote(num_gpus=1)(build)
    data = ray.get(task.remote(onnx.read_bytes(), job.model.precision, job.max_batch))
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
    if not quiet:
        print(f"built {path} from {onnx} on a GPU worker in {time.perf_counter() - start:.1f} s")
    return path, device


def _resolve_workers(ray, value, device: str) -> int:
    if value == "auto" or value is None:
        res = ray.cluster_resources()
        return max(1, int(res.get("GPU", 0))) if device == "cuda" else max(1, int(res.get("CPU", 1)) // 2)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JobError(f"workers must be \"auto\" or a positive integer, got {value!r}")
    return value


def _run(ray, job, workers, quiet, plan, max_retries):
    from scoring.report import Metrics, Progress, write_report

    started = time.time()
    work = pending_work(job)
    out_dir, dataset, shards, done, todo = work.out_dir, work.dataset, work.shards, work.done, work.todo
    if not todo:
        nothing_to_do(work, quiet)
        return None
    device = _cluster_device(ray, job)
    plan_path, device = _plan(ray, job, out_dir, plan, device, quiet)
    n = min(_resolve_workers(ray, workers if workers is not None else job.run.workers, device), len(todo))
    if device == "cuda" and ray.cluster_resources().get("GPU", 0) < 1:
        raise JobError("the job runs on GPUs (device \"cuda\"), but the Ray cluster has none; set [run] "
                       "device = \"cpu\" with a CPU plan, or add GPU nodes")
    if not quiet:
        resumed = f" ({len(done)} already done)" if done else ""
        print(f"scoring {sum(s.num_rows for s in todo)} rows in {len(todo)} shards{resumed} with {n} Ray "
              f"{'GPU' if device == 'cuda' else 'CPU'} actor{'s' * (n != 1)}: {dataset.describe()}", flush=True)

    plan_bytes = Path(plan_path).read_bytes()
    digest = hashlib.sha256(plan_bytes).hexdigest()
    plan_ref, job_ref, data_ref = ray.put(plan_bytes), ray.put(job), ray.put(dataset)
    resources = {"num_gpus": 1, "num_cpus": 1} if device == "cuda" else {"num_cpus": 1}
    actor_cls = ray.remote(ShardScorer).options(max_restarts=0, **resources)

    def start(worker_id: int):
        return actor_cls.remote(job_ref, plan_ref, digest, worker_id, device, data_ref, job.run.decode_threads)

    actors = {i: start(i) for i in range(n)}
    next_id = n
    idle = list(range(n))
    pending = list(todo)
    inflight: dict = {}  # ObjectRef -> (worker id, shard)
    deaths: Counter = Counter()
    failures: list[str] = []
    ended: set[int] = set()  # actors whose scoring thread has stopped with an error
    retried = 0
    try:
        with Progress(sum(s.num_rows for s in todo), label="scoring", quiet=quiet) as progress:
            while inflight or (pending and not failures):
                while idle and pending and not failures:
                    i = idle.pop(0)
                    shard = pending.pop(0)
                    inflight[actors[i].score.remote(shard)] = (i, shard)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    i, shard = inflight.pop(ref)
                    try:
                        msg = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        deaths[shard.key] += 1
                        ray.kill(actors.pop(i), no_restart=True)
                        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        if deaths[shard.key] > max_retries:
                            failures.append(f"shard {shard.key} ({shard.file}) was being scored by a worker that died "
                                            f"{deaths[shard.key]} times ({why}); it may be too big for a worker's "
                                            f"memory: lower [data] shard_rows or [run] batch.")
                            continue
                        retried += 1
                        pending.insert(0, shard)
                        actors[next_id] = start(next_id)
                        idle.append(next_id)
                        if not quiet:
                            print(f"\nworker {i} died while scoring {shard.key} ({why}); the shard goes to a new "
                                  f"worker {next_id}", file=sys.stderr, flush=True)
                        next_id += 1
                        continue
                    except ray.exceptions.RayError as exc:  # pragma: no cover - score() itself raised
                        failures.append(f"worker {i} failed: {exc}")
                        ended.add(i)
                        continue
                    if msg[0] == "done":
                        progress.update(msg[2], msg[3])
                        idle.append(i)
                    else:
                        failures.append(msg[1])
                        ended.add(i)
            results = _finish(ray, actors, ended, failures)
    finally:
        for a in actors.values():
            ray.kill(a, no_restart=True)

    raise_if_failed(failures, out_dir, len(shards))
    info = job_info(job, work, plan_path, "ray", device, started, shards_retried=retried,
                    decode_threads=job.run.decode_threads)
    return write_report(out_dir, info, [Metrics.from_dict(results[i]) for i in sorted(results)])


def _finish(ray, actors: dict, ended: set, failures: list) -> dict[int, dict]:
    """Each live actor's metrics; an actor that dies now has finished its shards, so only warn."""
    refs = {actors[i].finish.remote(): i for i in actors if i not in ended}
    results = {}
    for ref, i in refs.items():
        try:
            kind, value = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            log.warning("worker %s died before sending its metrics: %s", i, exc)
            continue
        if kind == "metrics":
            results[i] = value
        else:
            failures.append(value)
    return results


# ---------------------------------------------------------------------------------------------
# Ray Data
# ---------------------------------------------------------------------------------------------


class EngineMapper:
    """A callable class for `Dataset.map_batches(EngineMapper, fn_constructor_kwargs={...},
    batch_format="numpy")`: each Ray Data actor loads the plan once; each batch gets the columns
    top_k_indices (int32, rows x k; -1 on error rows), top_k_scores (float32, NaN on error rows),
    top_k_labels (when labels are given), raw (when raw=True) and error (None or the message).

    plan_path: a plan file every node can read; or plan: its bytes (or an ObjectRef of them).
    image_column: Hugging Face image structs ({"bytes", "path"}), encoded bytes, or uint8 HWC
    arrays (flat ones are reshaped to image_shape). preprocess: a scoring.decode.Preprocess or a
    dict of its fields. batch: rows per engine call (default: min(64, the plan's max batch))."""

    def __init__(self, plan_path: str | os.PathLike | None = None, *, plan=None, image_column: str = "image",
                 preprocess=None, top_k: int = 5, labels: list[str] | None = None, raw: bool = False,
                 batch: int | None = None, decode_threads: int = 1, image_shape: tuple | None = None,
                 keep_image: bool = True):
        import engine
        from scoring.decode import CpuDecoder, Preprocess
        from scoring.pipeline import CpuRunner

        if plan is not None:
            if not isinstance(plan, (bytes, bytearray)):
                plan = _import_ray().get(plan)
            plan_path = _plan_file(bytes(plan), hashlib.sha256(plan).hexdigest())
        if plan_path is None:
            raise JobError("EngineMapper needs plan_path (a plan file) or plan (its bytes)")
        if preprocess is None:
            preprocess = Preprocess()
        elif isinstance(preprocess, dict):
            preprocess = Preprocess(**preprocess)
        self.engine = engine.load(plan_path)
        max_batch = self.engine.max_batch or 64
        self.runner = CpuRunner(self.engine, batch or min(64, max_batch), preprocess)
        self.decoder = CpuDecoder(preprocess, decode_threads)
        self.buffer = np.empty((self.runner.capacity,) + tuple(preprocess.output_shape), preprocess.np_dtype)
        self.image_column, self.top_k, self.labels, self.raw = image_column, top_k, labels, raw
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.keep_image = keep_image

    def _item(self, value):
        if isinstance(value, dict):
            value = value.get("bytes")
        if isinstance(value, np.ndarray) and value.dtype == np.uint8:
            return value.reshape(self.image_shape) if value.ndim == 1 and self.image_shape else value
        if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
            return self._item(value.item())
        return value

    def __call__(self, batch: dict) -> dict:
        from scoring.outputs import top_k
        from scoring.pipeline import Slot

        items = [self._item(v) for v in batch[self.image_column]]
        rows = len(items)
        scores, errors = None, [None] * rows
        step = self.runner.batch
        for lo in range(0, rows, step):
            chunk = items[lo:lo + step]
            errs = self.decoder.decode_into(chunk, self.buffer)
            out = self.runner.run(Slot(0, self.buffer, np.arange(len(chunk)), errs, len(chunk)))
            if scores is None:
                scores = np.full((rows, out.shape[1]), np.nan, np.float32)
            scores[lo:lo + len(chunk)] = out
            errors[lo:lo + len(chunk)] = errs
        ok = np.array([e is None for e in errors], bool)
        k = min(self.top_k, scores.shape[1]) if scores is not None else self.top_k
        indices = np.full((rows, k), -1, np.int32)
        values = np.full((rows, k), np.nan, np.float32)
        if scores is not None and ok.any():
            idx, val = top_k(scores[ok], k)
            indices[ok], values[ok] = idx, val
        result = {name: col for name, col in batch.items() if self.keep_image or name != self.image_column}
        result["top_k_indices"], result["top_k_scores"] = indices, values
        if self.labels is not None:
            labels = np.empty(rows, object)
            for r in range(rows):
                labels[r] = [self.labels[i] for i in indices[r]] if ok[r] else None
            result["top_k_labels"] = labels
        if self.raw and scores is not None:
            scores[~ok] = np.nan
            result["raw"] = scores
        result["error"] = np.array(errors, dtype=object)
        return result
