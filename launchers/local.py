"""The local launcher: one worker process per GPU on this host (CPU workers where there is none).

    report = run_local(load_job("jobs/example.toml"), workers=2)

The driver (this process) builds the plan once when the job names an ONNX model, opens the
dataset, cuts it into shards, drops the shards the manifest already lists (a rerun resumes), and
starts the workers with the "spawn" start method. Work is handed out dynamically: a worker asks
for its next shard when it is ready to read it, so a slow worker takes fewer shards.

Each worker talks to the driver over a pipe of its own ("next" -> a Shard or None; progress,
metrics and errors back) rather than through one shared multiprocessing.Queue: a queue's readers
and writers share a lock, and a worker killed while holding it (SIGKILL, the OOM killer) would
hang every other worker. With a pipe each, the driver always knows which shards each worker holds,
and a dead worker is seen at once (its process sentinel).

A worker reads ahead across shards: score_shards iterates its shards on a background thread (its
shard feed) one shard ahead of its reader, so it asks for shard k+1 as the reader starts on shard
k, while shard k-1 (and perhaps k-2) is still being computed and written on the main thread; the
reader at the end of shard k finds shard k+1 there and fills its last batch with shard k+1's first
rows. So a worker may hold up to 4 shards, and its pipe is used from two threads: the feed's
thread sends "next" and is the
only one to receive (the driver sends nothing but replies), the main thread sends progress and
"done"; a lock keeps the two threads' messages whole. When a worker dies the others finish the
shards they hold and get no more; the job then fails with an error naming the worker and every
shard it held, and the finished shards stay in the manifest, so running the same command again
does only the rest.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path

from engine.errors import BatchscoreError
from launchers.common import job_info, nothing_to_do, pending_work, end_of_workers, shards_named
from scoring.errors import JobError

log = logging.getLogger(__name__)

SHARDS_FILE = "shards.json"  # how the dataset was cut: a rerun must cut it the same way
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


def run_local(job, workers: int | str | None = None, quiet: bool = False, plan: str | os.PathLike | None = None):
    """Run a job with worker processes on this host; return the scoring.report.Report written into
    the output directory, or None when the manifest already lists every shard (nothing was run).
    `workers` overrides [run] workers; `plan` overrides [model]."""
    from scoring.report import write_report
    from scoring.worker import resolve_decode_threads

    started = time.time()
    work = pending_work(job)
    if not work.todo:
        nothing_to_do(work, quiet)
        return None
    plan_path, device = _plan_for(job, work.out_dir, plan, quiet)
    todo, dataset = work.todo, work.dataset
    n = _resolve_workers(workers if workers is not None else job.run.workers, device)
    n = min(n, len(todo))
    threads = resolve_decode_threads(job, n)
    if not quiet:
        resumed = f" ({len(work.done)} already done)" if work.done else ""
        print(f"scoring {sum(s.num_rows for s in todo)} rows in {len(todo)} shards{resumed} with {n} "
              f"{device} worker{'s' * (n != 1)}: {dataset.describe()}")
    metrics = _drive(job, plan_path, dataset, todo, n, device, threads, quiet)
    info = job_info(job, work, plan_path, "local", device, started, decode_threads=threads)
    return write_report(work.out_dir, info, metrics)


def _drive(job, plan_path, dataset, todo, n, device, threads, quiet):
    from scoring.report import Metrics, Progress

    ctx = mp.get_context("spawn")
    pending = list(todo)
    procs, conns = [], []
    holding: dict[int, dict[str, None]] = {i: {} for i in range(n)}  # worker -> keys it holds, in hand-out order
    results: dict[int, dict] = {}
    failures: list[str] = []
    visible = _visible_gpus() if device == "cuda" else []
    with Progress(sum(s.num_rows for s in todo), label="scoring", quiet=quiet) as progress:
        try:
            for i in range(n):
                parent, child = ctx.Pipe(duplex=True)
                env = {var: str(max(1, threads)) for var in _THREAD_VARS}
                if device == "cuda":
                    env["CUDA_VISIBLE_DEVICES"] = visible[i % len(visible)]
                p = ctx.Process(target=_worker_main, name=f"batchscore-worker-{i}", daemon=True,
                                args=(child, job, str(plan_path), dataset, i, device, threads))
                with _environment(env):
                    p.start()
                child.close()
                procs.append(p)
                conns.append(parent)
            live = {c: i for i, c in enumerate(conns)}
            stopping = False
            while live:
                for ready in wait(list(live), timeout=0.5):
                    i = live[ready]
                    try:
                        msg = ready.recv()
                    except (EOFError, OSError):
                        # Everything the worker sent has been read: it has exited or is exiting.
                        del live[ready]
                        procs[i].join(timeout=10)
                        if i not in results and not _reported_error(failures, i):
                            failures.append(_death(procs[i], i, list(holding[i])))
                            stopping = True
                        continue
                    kind = msg[0]
                    if kind == "next":
                        shard = pending.pop(0) if pending and not stopping else None
                        if shard is not None:
                            holding[i][shard.key] = None
                        try:
                            ready.send(shard)
                        except OSError:
                            pass  # it died meanwhile: the EOF comes next
                    elif kind == "batch":
                        progress.update(msg[1], msg[2])
                    elif kind == "done":
                        holding[i].pop(msg[1], None)
                    elif kind == "metrics":
                        results[i] = msg[1]
                    elif kind == "error":
                        failures.append(msg[1])
                        stopping = True
        except KeyboardInterrupt:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            raise
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()
            for c in conns:
                c.close()
    end_of_workers(failures, Path(job.output.dir), len(dataset.shards(job.data.shard_rows)))
    return [Metrics.from_dict(results[i]) for i in sorted(results)]


def _reported_error(failures: list[str], worker: int) -> bool:
    return any(f.startswith(f"worker {worker} ") for f in failures)


def _death(p, i: int, shard_keys: list[str]) -> str:
    """What a dead worker's failure says: how it ended and every shard it held (read ahead or being
    scored; none of them is in the manifest)."""
    code = p.exitcode
    if code is None:
        how = "closed its connection but did not exit"
    elif code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code} without reporting"
    where = f" while scoring {shards_named(shard_keys)}" if shard_keys else ""
    return f"worker {i} (pid {p.pid}) {how}{where}; the other workers took no new shards after that."


@contextmanager
def _environment(values: dict[str, str]):
    """Set variables for a child about to be spawned (a user's own settings win), then restore."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if k == "CUDA_VISIBLE_DEVICES" or k not in os.environ:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# The worker process
# ---------------------------------------------------------------------------------------------


class _DriverLink:
    """A worker's end of its pipe, shared by two threads: score_shards' shard feed thread asks for
    shards (`next_shard`, the only receiver), the main thread reports progress and results (`send`).
    One lock keeps the messages of the two from interleaving on the pipe."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()
        self.closed = False

    def send(self, msg) -> None:
        with self.lock:
            self.conn.send(msg)

    def next_shard(self):
        """The driver's next shard for this worker, or None when there is none (or the worker is
        shutting down). The lock is released before waiting, so the main thread can report meanwhile:
        the driver answers nothing but "next", so the reply read here is this request's."""
        with self.lock:
            if self.closed:
                return None
            self.conn.send(("next",))
        return self.conn.recv()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.conn.close()


def _worker_main(conn, job, plan_path, dataset, worker_id, device, threads) -> None:
    """Entry point of a spawned worker: score the shards the driver hands out, send metrics back."""
    from scoring.worker import score_shards

    link = _DriverLink(conn)

    def feed():  # runs on score_shards' shard feed thread
        while True:
            shard = link.next_shard()
            if shard is None:
                return
            yield shard

    def on_batch(rows, errors):
        link.send(("batch", rows, errors))

    def on_shard(event, shard, info):
        if event == "done":
            link.send(("done", shard.key, info["rows"], info["errors"]))

    try:
        metrics = score_shards(job, plan_path, feed(), worker_id, dataset=dataset, device=device,
                               decode_threads=threads, on_batch=on_batch, on_shard=on_shard)
        link.send(("metrics", metrics.to_dict()))
    except BatchscoreError as exc:
        _report_and_exit(link, f"worker {worker_id} stopped: {exc}")
    except BaseException:  # a bug: keep the traceback for the report
        _report_and_exit(link, f"worker {worker_id} failed with an unexpected error (a bug in batchscore):\n"
                               f"{traceback.format_exc()}")
    link.close()


def _report_and_exit(link: _DriverLink, message: str) -> None:
    try:
        link.send(("error", message))
        link.close()
    except OSError:
        pass  # the driver is gone: nobody to tell
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Plans, devices, workers
# ---------------------------------------------------------------------------------------------


def _gpu_count() -> int:
    try:
        from kernels.cuda import gpu_unavailable

        if gpu_unavailable() is not None:
            return 0
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        return [v.strip() for v in visible.split(",") if v.strip()]
    return [str(i) for i in range(max(1, _gpu_count()))]


def _resolve_workers(value, device: str) -> int:
    if value == "auto" or value is None:
        return max(1, _gpu_count()) if device == "cuda" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JobError(f"workers must be \"auto\" or a positive integer, got {value!r}")
    return value


def _plan_for(job, out_dir: Path, plan_override, quiet: bool) -> tuple[Path, str]:
    """The plan to score with and the device it runs on: the given plan, or one built from the
    job's ONNX model into the output directory (reused while it matches the model and settings)."""
    import engine

    wanted = job.run.device
    if plan_override is not None or job.model.plan is not None:
        path = Path(plan_override or job.model.plan)
        try:
            header = engine.read_plan(path).header
        except BatchscoreError:
            raise
        except OSError as exc:
            raise JobError(f"plan {path} cannot be read: {exc}") from None
        kind = header.get("device", {}).get("kind", "cpu")
        device = "cuda" if kind == "cuda" else "cpu"
        if wanted != "auto" and wanted != device:
            raise JobError(f"[run] device = \"{wanted}\", but the plan {path} was built for {device}; "
                           f"rebuild it with `batchscore build --device {wanted}` or set device = \"auto\"")
        return path, device

    device = wanted if wanted != "auto" else ("cuda" if _gpu_count() > 0 else "cpu")
    precision = job.model.precision
    if device == "cpu" and precision != "fp32":
        raise JobError(f"[model] precision = \"{precision}\" needs a GPU; this job runs on the CPU "
                       f"([run] device = \"{wanted}\"), where plans are fp32")
    onnx = Path(job.model.onnx)
    path = out_dir / f"{onnx.stem}.{device}.{precision}.b{job.max_batch}.plan"
    if path.is_file() and path.stat().st_mtime >= onnx.stat().st_mtime:
        if not quiet:
            print(f"using the plan built before: {path}")
        return path, device
    config = engine.BuildConfig(precision=precision, max_batch=job.max_batch, device=device)
    start = time.perf_counter()
    plan = engine.build(str(onnx), config)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        plan.save(temp)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    if not quiet:
        print(f"built {path} from {onnx} in {time.perf_counter() - start:.1f} s")
    return path, device


def _check_same_sharding(out_dir: Path, dataset, shards, shard_rows: int) -> None:
    """Part files are named by shard; a rerun that cut the data differently (another shard_rows,
    files added) would skip or repeat rows, so it is refused."""
    record = {"source": dataset.source, "files": list(dataset.files), "shard_rows": shard_rows,
              "shards": [{"key": s.key, "file": s.file, "row_groups": list(s.row_groups),
                          "first_row": s.first_row, "num_rows": s.num_rows} for s in shards]}
    from scoring.manifest import Manifest

    path = out_dir / SHARDS_FILE
    if path.is_file() and Manifest(out_dir).done():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = None
        if before is not None and before.get("shards") != record["shards"]:
            raise JobError(
                f"{out_dir} holds the results of a run that cut the data into other shards "
                f"({len(before.get('shards', []))} shards of about {before.get('shard_rows')} rows, now "
                f"{len(shards)} of about {shard_rows}; or the dataset's files changed). Resuming would skip "
                f"or repeat rows: give a new [output] dir, or remove {out_dir} to start again.")
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(temp, path)
