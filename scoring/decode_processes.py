"""Decoders in child processes, each with a GIL of its own, writing straight into the worker's ring.

In one process, the decoders share the GIL with the reader, the writer and each other: on an H100
two in-process GPU decoders reached 24,800 images/s alone but about 13,700 inside the pipeline. Here
each decoder runs in a child process and writes into ring buffers the worker shares with it (device
memory through CUDA IPC handles, or host memory through a file in /dev/shm); the worker sends a
batch's encoded items down a socket and gets back one message per item (None or why it failed).

    buffers = SharedBuffers.on_device()                  # or SharedBuffers.on_host()
    decoder = ProcessDecoder(DecoderRecipe("gpu", preprocess, threads=8))  # children start now
    ring = runner.make_ring(slots, allocate=buffers.allocate)
    decoder.attach(buffers)
    errors = decoder.decode_into(items, ring.buffers[0])   # what GpuDecoder.decode_into returns

A ProcessDecoder is a drop-in decoder for scoring.pipeline.Prefetcher: its decode_into blocks the
calling (prefetch) thread only in socket I/O, which releases the GIL. With `processes` > 1 a batch
is split into that many row ranges decoded at once (CPU decoding); a GPU decoder wants whole batches,
so there the worker runs several ProcessDecoders of one child each.

Children are started with `python -m scoring.decode_processes FD` (not multiprocessing), so they
do not re-import the parent's main module: a Ray actor, an MPI rank and the CLI all work alike. A
child that dies makes the next decode_into raise a DecodeProcessError naming it and its exit code;
one that gives no reply for REPLY_TIMEOUT seconds is killed, and named the same way.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from multiprocessing.connection import Connection

import numpy as np

from scoring.decode import Preprocess
from scoring.errors import ScoringError

STOP_TIMEOUT = 10.0  # seconds a child gets to exit after "stop" before it is killed
# Seconds a child may take to answer one batch (its first answer includes its start-up: imports, the
# GPU, the decoder). A child that takes longer is hung, not slow: it is killed and the worker fails
# with its name, rather than waiting forever; a rerun resumes from the manifest.
REPLY_TIMEOUT = 600.0


class DecodeProcessError(ScoringError):
    """A decode child process failed or died."""


@dataclasses.dataclass(frozen=True)
class DecoderRecipe:
    """How a child builds its decoder: kind "gpu" (scoring.gpu_decode.GpuDecoder) or "cpu"
    (scoring.decode.CpuDecoder), with the decoder's own arguments."""

    kind: str
    preprocess: Preprocess
    threads: int = 1
    nvimgcodec_backends: str = "all"
    device_id: int | None = None
    jpeg_hardware: bool | None = None  # GpuDecoder's: None follows $BATCHSCORE_NVJPEG_HARDWARE
    spin_wait: bool = False  # GpuDecoder's (scoring.gpu_wait)

    def __post_init__(self):
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"decoder kind must be 'gpu' or 'cpu', got {self.kind!r}")

    def make(self):
        if self.kind == "cpu":
            from scoring.decode import CpuDecoder

            return CpuDecoder(self.preprocess, self.threads)
        import cupy as cp

        from scoring.gpu_decode import GpuDecoder

        if self.device_id is not None:
            cp.cuda.Device(self.device_id).use()
        return GpuDecoder(self.preprocess, self.threads, nvimgcodec_backends=self.nvimgcodec_backends,
                          device_id=self.device_id, jpeg_hardware=self.jpeg_hardware,
                          spin_wait=self.spin_wait)


# ---- buffers both sides can reach -------------------------------------------------------------------
class SharedBuffers:
    """Allocates the ring's buffers so that child processes can map them: `allocate(shape, dtype)`
    is a HostRing allocator; `descriptors` tell a child how to open buffer i (see open_buffer)."""

    def __init__(self, where: str):
        self.where = where
        self.arrays: list = []
        self.descriptors: list[tuple] = []
        self._owned: list = []  # device allocations, or paths of host files to remove on close

    @classmethod
    def on_device(cls) -> "SharedBuffers":
        return cls("cuda")

    @classmethod
    def on_host(cls) -> "SharedBuffers":
        return cls("host")

    def allocate(self, shape: tuple, dtype) -> object:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if self.where == "cuda":
            import cupy as cp

            # Its own cudaMalloc (not the pool's), so the IPC handle maps exactly this buffer.
            memory = cp.cuda.Memory(nbytes)
            array = cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(memory, 0))
            handle = bytes(cp.cuda.runtime.ipcGetMemHandle(memory.ptr))
            self._owned.append(memory)
            descriptor = ("cuda", handle, tuple(shape), dtype.str, memory.device_id)
        else:
            folder = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory-backed where there is one
            fd, path = tempfile.mkstemp(prefix="batchscore-ring-", dir=folder)
            os.ftruncate(fd, nbytes)
            os.close(fd)
            array = np.memmap(path, dtype, "r+", shape=tuple(shape))
            self._owned.append(path)
            descriptor = ("host", path, tuple(shape), dtype.str)
        self.arrays.append(array)
        self.descriptors.append(descriptor)
        return array

    def index_of(self, array) -> int:
        for i, candidate in enumerate(self.arrays):
            if candidate is array:
                return i
        raise ValueError("this buffer was not allocated by the SharedBuffers the decoder is attached to")

    def close(self) -> None:
        """Free what the worker allocated (children keep host mappings until they exit)."""
        for owned in self._owned:
            if isinstance(owned, str):
                try:
                    os.unlink(owned)
                except FileNotFoundError:
                    pass
        self._owned.clear()
        self.arrays.clear()


def open_buffer(descriptor: tuple):
    """A child's view of one shared buffer."""
    if descriptor[0] == "host":
        _, path, shape, dtype = descriptor
        return np.memmap(path, np.dtype(dtype), "r+", shape=shape)
    import cupy as cp

    _, handle, shape, dtype, device_id = descriptor
    dtype = np.dtype(dtype)
    with cp.cuda.Device(device_id):
        pointer = cp.cuda.runtime.ipcOpenMemHandle(handle)
        memory = cp.cuda.UnownedMemory(pointer, int(np.prod(shape)) * dtype.itemsize, None, device_id)
        return cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(memory, 0))


# ---- the parent's side --------------------------------------------------------------------------------
class _Child:
    """One decode process and the worker's end of its socket."""

    def __init__(self, recipe: DecoderRecipe, name: str):
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        # The child imports what this process imports, from wherever this process found it.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen([sys.executable, "-m", "scoring.decode_processes", str(child_end.fileno())],
                                        pass_fds=[child_end.fileno()], env=env)
        child_end.close()
        self.name = name
        self.connection = Connection(parent_end.detach())
        self.connection.send(recipe)
        self.ready = False

    def send(self, message) -> None:
        try:
            self.connection.send(message)
        except OSError:
            self._died()

    def receive(self):
        """The next reply: ("done", errors) once the child is ready; raises if it failed or died."""
        while True:
            try:
                if not self.connection.poll(REPLY_TIMEOUT):
                    self._hung()
                kind, payload = self.connection.recv()
            except (EOFError, OSError):
                self._died()
            if kind == "ready":
                self.ready = True
                continue
            if kind == "failed":
                raise DecodeProcessError(f"{self.name} (pid {self.process.pid}) failed: {payload}")
            return payload

    def _died(self):
        code = self.process.wait(timeout=STOP_TIMEOUT)
        last_words = self._last_words()
        if last_words:
            raise DecodeProcessError(f"{self.name} (pid {self.process.pid}) failed: {last_words}") from None
        raise DecodeProcessError(f"{self.name} (pid {self.process.pid}) died with exit code {code}; "
                                 f"its batch was not decoded") from None

    def _hung(self):
        self.process.kill()
        self.process.wait()
        raise DecodeProcessError(f"{self.name} (pid {self.process.pid}) gave no reply in {REPLY_TIMEOUT:g} s, so "
                                 f"it was killed; its batch was not decoded")

    def _last_words(self) -> str | None:
        """The failure a child reported before it exited (one that could not start its decoder)."""
        try:
            while self.connection.poll(0):
                kind, payload = self.connection.recv()
                if kind == "failed":
                    return payload
        except (EOFError, OSError):
            pass
        return None

    def stop(self) -> None:
        if self.process.poll() is not None:  # already gone (died, or killed as hung)
            self.connection.close()
            return
        try:
            self.connection.send(("stop", None))
        except OSError:
            pass
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.connection.close()


class ProcessDecoder:
    """A decoder whose work runs in `processes` child processes (see the module docstring)."""

    def __init__(self, recipe: DecoderRecipe, processes: int = 1, name: str = "decode process"):
        if processes < 1:
            raise ValueError(f"a ProcessDecoder needs at least one process, got {processes}")
        self.recipe = recipe
        self.preprocess = recipe.preprocess
        self._children = [_Child(recipe, f"{name} {k}" if processes > 1 else name) for k in range(processes)]
        self._buffers: SharedBuffers | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        return [child.process.pid for child in self._children]

    def attach(self, buffers: SharedBuffers) -> None:
        """Tell the children about the ring's buffers (call once, after the ring is allocated)."""
        self._buffers = buffers
        for child in self._children:
            child.send(("buffers", buffers.descriptors))

    def decode_into(self, items, out) -> list[str | None]:
        items = list(items)
        with self._lock:
            if self._closed:
                raise RuntimeError("ProcessDecoder.decode_into after close()")
            if self._buffers is None:
                raise RuntimeError("ProcessDecoder.decode_into before attach(buffers)")
            index = self._buffers.index_of(out)
            if not items:
                return []
            parts = np.array_split(np.arange(len(items)), min(len(self._children), len(items)))
            busy = []
            for child, rows in zip(self._children, parts):
                start, stop = int(rows[0]), int(rows[-1]) + 1
                child.send(("decode", (index, start, items[start:stop])))
                busy.append(child)
            errors: list[str | None] = []
            failure = None
            for child in busy:  # all of them, even after a failure, so no reply is left unread
                try:
                    errors.extend(child.receive())
                except DecodeProcessError as exc:
                    failure = failure or exc
            if failure is not None:
                raise failure
            return errors

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for child in self._children:
                child.stop()

    def __enter__(self) -> "ProcessDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- the child's side ---------------------------------------------------------------------------------
def _serve(connection: Connection) -> None:
    recipe = connection.recv()
    try:
        decoder = recipe.make()
    except Exception as exc:
        connection.send(("failed", f"could not start its decoder: {type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", os.getpid()))
    buffers: list = []
    with decoder:
        while True:
            try:
                kind, payload = connection.recv()
            except EOFError:  # the worker is gone
                return
            if kind == "stop":
                return
            try:
                if kind == "buffers":
                    buffers = [open_buffer(d) for d in payload]
                    continue
                index, start, items = payload
                out = buffers[index][start:start + len(items)]
                connection.send(("done", decoder.decode_into(items, out)))
            except Exception as exc:
                connection.send(("failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()))


def main(argv: list[str]) -> None:
    connection = Connection(int(argv[1]))
    try:
        _serve(connection)
    finally:
        connection.close()


if __name__ == "__main__":
    main(sys.argv)
