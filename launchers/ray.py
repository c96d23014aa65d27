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
4. drives a shard queue: each actor holds up to 2 shards (`actor.score.remote(shard)`, one call
   per shard), and `ray.wait` over the shards in flight hands the next one to whichever actor
   finishes a shard first, so a slow actor takes fewer shards;
5. gathers each actor's Metrics (`to_dict`) and writes the report.

Two shards per actor, because score_shards reads ahead across shards: its reader starts reading
shard k+1 as soon as it has read the last batch of shard k (filling that batch with shard k+1's
first rows where shard k+1 is there), while shard k is still being computed and written. With one
shard at a time the actor would drain its pipeline at every shard boundary, and every shard's
last batch would go short. So an actor is a threaded actor (max_concurrency 4): its two `score` calls (and
`finish`) wait at once, each for its own shard's result (or the worker's error, which wakes
them all).

An actor that dies (SIGKILL, the OOM killer, a lost node: `RayActorError`) is replaced by a new
actor, and every shard it held goes back to the front of the queue. Output stays exactly-once:
part files are written atomically by shard key (a dead actor leaves at most a hidden temp file,
which readers ignore), and a shard is recorded in the manifest only once its part is complete.
A shard that finished just before its actor died is not scored again: the new actor, told
that the shard is a retry, finds it in the manifest. A shard whose actor dies `max_retries` times (3) fails the job. An actor that
raises (a bad row with fail_fast, a bug) stops the hand-out; the job then fails with its message
once the shards in flight are finished, and a rerun does only the rest.

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

from launchers.common import job_info, nothing_to_do, pending_work, end_of_workers, shards_named
from launchers.local import _plan_for

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # times a shard is handed out again after the actor scoring it died
SHARDS_PER_ACTOR = 2  # in flight per actor: one being scored, one its reader reads ahead
ACTOR_CONCURRENCY = 4  # threads per actor: SHARDS_PER_ACTOR waiting score calls, finish, pid


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


class _Waiter:
    """One `score` call waiting for its shard's result."""

    def __init__(self):
        self.event = threading.Event()
        self.result: tuple | None = None

    def set(self, result: tuple) -> None:
        self.result = result
        self.event.set()


class ShardScorer:
    """One worker: loads the plan once, then scores the shards it is given, one `score` call each.

    score_shards (scoring/worker.py) runs on a thread of the actor for the actor's whole life,
    fed from a queue, so the engine is loaded once and the loop is the one every launcher uses.
    The actor is threaded: several `score` calls wait at once, each for its own shard ("done",
    given when score_shards reports the shard recorded), and an error ends every one of them."""

    def __init__(self, job, plan_bytes: bytes, digest: str, worker_id: int, device: str, dataset,
                 decode_threads: int | str):
        self.job, self.worker_id, self.dataset = job, worker_id, dataset
        self.host = socket.gethostname()
        self.inbox: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.waiting: dict[str, _Waiter] = {}  # shard key -> its score call
        self.outcome: tuple | None = None  # once the loop has stopped: ("metrics", ...) or ("error", ...)
        self.stopped = threading.Event()
        try:
            self.plan_path = _plan_file(plan_bytes, digest)
        except OSError as exc:
            self.plan_path = None
            self._stop(("error", f"worker {worker_id} ({self.host}) cannot write the plan to a local file: {exc}"))
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

        def on_shard(event, shard, info):  # on the scoring thread, after the shard is recorded
            if event == "done":
                with self.lock:
                    waiter = self.waiting.pop(shard.key, None)
                if waiter is not None:
                    waiter.set(("done", shard.key, info["rows"], info["errors"]))

        try:
            m = score_shards(self.job, self.plan_path, iter(self.inbox.get, None), self.worker_id,
                             dataset=self.dataset, device=self.device, decode_threads=self.threads,
                             on_shard=on_shard)
            self._stop(("metrics", m.to_dict()))
        except BatchscoreError as exc:
            self._stop(("error", f"worker {self.worker_id} ({self.host}) stopped: {exc}"))
        except BaseException:
            self._stop(("error", f"worker {self.worker_id} ({self.host}) failed with an unexpected error "
                                 f"(a bug in batchscore):\n{traceback.format_exc()}"))

    def _stop(self, outcome: tuple) -> None:
        """The loop has ended: say so to every score call still waiting, and to finish."""
        with self.lock:
            self.outcome = outcome
            waiting, self.waiting = self.waiting, {}
        for key, waiter in waiting.items():
            # After an error that is the answer; after a normal end (finish) none should be left.
            waiter.set(outcome if outcome[0] == "error" else
                       ("error", f"worker {self.worker_id} ({self.host}) stopped before scoring shard {key}"))
        self.stopped.set()

    def score(self, shard, retry: bool = False):
        """Score one shard; ("done", key, rows, errors) once it is recorded, or ("error", message).
        `retry`: its last actor died, perhaps after recording it, so the manifest is read first
        (only then: reading it costs time in proportion to the shards recorded so far)."""
        from scoring.manifest import Manifest

        part = Manifest(self.job.output.dir).parts().get(shard.key) if retry else None
        if part is not None:  # finished by an actor that died before it could say so
            return ("done", shard.key, part.rows, part.errors)
        waiter = _Waiter()
        with self.lock:  # checked and registered together: _stop cannot slip in between
            if self.outcome is not None:
                return self.outcome if self.outcome[0] == "error" else (
                    "error", f"worker {self.worker_id} ({self.host}) has finished and takes no more shards")
            self.waiting[shard.key] = waiter
            self.inbox.put(shard)
        waiter.event.wait()
        return waiter.result

    def finish(self):
        """Stop once the shards given are done; ("metrics", Metrics.to_dict()) or ("error", message)."""
        self.inbox.put(None)
        self.stopped.wait()
        return self.outcome

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
    actor_cls = ray.remote(ShardScorer).options(max_restarts=0, max_concurrency=ACTOR_CONCURRENCY, **resources)

    def start(worker_id: int):
        return actor_cls.remote(job_ref, plan_ref, digest, worker_id, device, data_ref, job.run.decode_threads)

    book = _Assignments(todo, SHARDS_PER_ACTOR, max_retries)
    actors = {}
    for i in range(n):
        actors[i] = start(i)
        book.add_actor(i)
    next_id = n
    inflight: dict = {}  # ObjectRef -> (worker id, shard)
    failures: list[str] = []
    ended: set[int] = set()  # actors whose scoring thread has stopped with an error
    retried = 0
    try:
        with Progress(sum(s.num_rows for s in todo), label="scoring", quiet=quiet) as progress:

            def settle(i: int, shard, msg: tuple) -> None:
                book.done(i, shard.key)
                if msg[0] == "done":
                    progress.update(msg[2], msg[3])
                elif i not in ended:  # each of its waiting calls brings the same error: keep one
                    failures.append(msg[1])
                    ended.add(i)

            while inflight or (book.pending and not failures):
                while not failures and (given := book.hand_out()) is not None:
                    i, shard = given
                    inflight[actors[i].score.remote(shard, book.deaths[shard.key] > 0)] = (i, shard)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref not in inflight:  # settled with its actor's death
                        continue
                    i, shard = inflight.pop(ref)
                    try:
                        settle(i, shard, ray.get(ref))
                    except ray.exceptions.RayActorError as exc:
                        # Its other calls: a result that came back before the death still counts.
                        for other in _refs_of(inflight, i):
                            msg = _result_if_any(ray, other)
                            if msg is not None:
                                settle(i, inflight[other][1], msg)
                            del inflight[other]
                        ray.kill(actors.pop(i), no_restart=True)
                        held, given_up = book.actor_died(i)
                        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        for lost, times in given_up:
                            failures.append(f"shard {lost.key} ({lost.file}) was being scored by a worker that died "
                                            f"{times} times ({why}); it may be too big for a worker's "
                                            f"memory: lower [data] shard_rows or [run] batch.")
                        if given_up or not held:
                            continue
                        retried += len(held)
                        actors[next_id] = start(next_id)
                        book.add_actor(next_id)
                        if not quiet:
                            print(f"\nworker {i} died while scoring {shards_named(s.key for s in held)} ({why}); "
                                  f"{'they go' if len(held) > 1 else 'it goes'} to a new worker {next_id}",
                                  file=sys.stderr, flush=True)
                        next_id += 1
                    except ray.exceptions.RayError as exc:  # pragma: no cover - score() itself raised
                        book.done(i, shard.key)
                        failures.append(f"worker {i} failed: {exc}")
                        ended.add(i)
            results = _finish(ray, actors, ended, failures)
    finally:
        for a in actors.values():
            ray.kill(a, no_restart=True)

    end_of_workers(failures, out_dir, len(shards))
    info = job_info(job, work, plan_path, "ray", device, started, shards_retried=retried,
                    decode_threads=job.run.decode_threads)
    return write_report(out_dir, info, [Metrics.from_dict(results[i]) for i in sorted(results)])


class _Assignments:
    """The driver's bookkeeping, no Ray in it: the shards still to hand out (in order), the shards
    each actor holds (in hand-out order) and how many times each shard's actor died."""

    def __init__(self, todo, per_actor: int, max_retries: int):
        self.pending = list(todo)
        self.per_actor, self.max_retries = per_actor, max_retries
        self.held: dict[int, dict] = {}  # actor id -> {shard key: Shard}
        self.deaths: Counter = Counter()

    def add_actor(self, i: int) -> None:
        self.held[i] = {}

    def hand_out(self):
        """(actor id, shard) for the next shard, to the actor with room that holds the fewest (the
        oldest among equals); None when no shard is left or every actor is full."""
        if not self.pending:
            return None
        room = [i for i, held in self.held.items() if len(held) < self.per_actor]
        if not room:
            return None
        i = min(room, key=lambda a: len(self.held[a]))
        shard = self.pending.pop(0)
        self.held[i][shard.key] = shard
        return i, shard

    def done(self, i: int, key: str) -> None:
        """Actor i answered for this shard (done or an error): it no longer holds it."""
        self.held.get(i, {}).pop(key, None)

    def actor_died(self, i: int) -> tuple[list, list]:
        """Actor i is gone: every shard it held goes back to the front of the queue, in the order it
        was handed out, unless it has now lost max_retries + 1 actors. Returns (shards put back,
        [(shard, deaths)] given up on)."""
        back, given_up = [], []
        for shard in self.held.pop(i, {}).values():
            self.deaths[shard.key] += 1
            if self.deaths[shard.key] > self.max_retries:
                given_up.append((shard, self.deaths[shard.key]))
            else:
                back.append(shard)
        self.pending[:0] = back
        return back, given_up


def _refs_of(inflight: dict, i: int) -> list:
    return [ref for ref, (j, _) in inflight.items() if j == i]


def _result_if_any(ray, ref):
    """The value of a call that has already returned one, else None (still running, or failed)."""
    ready, _ = ray.wait([ref], num_returns=1, timeout=0)
    if not ready:
        return None
    try:
        return ray.get(ref)
    except ray.exceptions.RayError:
        return None


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
        from scoring.runner import CpuRunner

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
