"""scoring.nvjpeg_streams: the chain dlsym -> cuGetProcAddress -> cuStreamCreate as the CUDA runtime in
libnvjpeg walks it, against a fake driver made of C-callable functions; the real driver and
nvJPEG are tests/gpu/test_gpu_nvjpeg_streams.py's."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring import nvjpeg_streams
from scoring.nvjpeg_streams import _DLSYM, _GET_PROC_V1, _GET_PROC_V2, _STREAM_CREATE, _STREAM_CREATE_PRIORITY, _Hooks

ROOT = Path(__file__).resolve().parents[2]
OTHER = 0x5EED  # a driver function nobody wraps: its address must come back unchanged


class FakeDriver:
    """dlsym, cuGetProcAddress(_v2) and the stream creators, as C function pointers that note their calls."""

    def __init__(self):
        self.made: list[tuple] = []  # (creator, flags, priority)
        self.create = _STREAM_CREATE(lambda stream, flags: self._make(stream, "plain", flags, None))
        self.create_priority = _STREAM_CREATE_PRIORITY(
            lambda stream, flags, priority: self._make(stream, "priority", flags, priority))
        self.get_proc_v2 = _GET_PROC_V2(lambda symbol, pfn, version, flags, found: self._get(symbol, pfn))
        self.get_proc_v1 = _GET_PROC_V1(lambda symbol, pfn, version, flags: self._get(symbol, pfn))
        self.dlsym = _DLSYM(self._dlsym)

    @staticmethod
    def address(function) -> int:
        return ctypes.cast(function, ctypes.c_void_p).value

    def _make(self, stream, creator, flags, priority):
        self.made.append((creator, flags, priority))
        stream[0] = 1000 + len(self.made)
        return 0

    def _functions(self) -> dict:
        return {b"cuStreamCreate": self.create, b"cuStreamCreateWithPriority": self.create_priority,
                b"cuGetProcAddress": self.get_proc_v2, b"cuGetProcAddress_v2": self.get_proc_v2}

    def _get(self, symbol, pfn):
        function = self._functions().get(symbol)
        pfn[0] = self.address(function) if function is not None else OTHER
        return 0

    def _dlsym(self, handle, name):
        if name == b"cuGetProcAddress":
            return self.address(self.get_proc_v1)
        function = self._functions().get(name)
        return self.address(function) if function is not None else None


def _get_proc(hooks: _Hooks, name: bytes, v2: bool = True):
    """What the runtime does first: dlsym the driver's cuGetProcAddress (through the hooks)."""
    found = hooks.dlsym(None, name)
    return (_GET_PROC_V2 if v2 else _GET_PROC_V1)(found)


def _lookup(get_proc, symbol: bytes, v2: bool = True) -> int:
    function = ctypes.c_void_p()
    args = (symbol, ctypes.byref(function), 13000, 0) + ((None,) if v2 else ())
    assert get_proc(*args) == 0
    return function.value


def test_streams_the_runtime_creates_get_our_priority_whichever_creator_it_asks_for():
    driver = FakeDriver()
    hooks = _Hooks(driver.address(driver.dlsym), priority=-5)
    get_proc = _get_proc(hooks, b"cuGetProcAddress_v2")
    stream = ctypes.c_void_p()
    assert _STREAM_CREATE(_lookup(get_proc, b"cuStreamCreate"))(ctypes.byref(stream), 1) == 0
    assert stream.value == 1001
    assert _STREAM_CREATE_PRIORITY(_lookup(get_proc, b"cuStreamCreateWithPriority"))(ctypes.byref(stream), 0, 0) == 0
    assert driver.made == [("priority", 1, -5), ("priority", 0, -5)]
    assert hooks.streams == [1001, 1002]
    assert _lookup(get_proc, b"cuMemAlloc") == OTHER  # everything else: the driver's own


def test_the_runtime_asking_for_cuGetProcAddress_again_gets_the_wrapped_one():
    driver = FakeDriver()
    hooks = _Hooks(driver.address(driver.dlsym), priority=-3)
    first = _get_proc(hooks, b"cuGetProcAddress", v2=False)  # v1, as found by dlsym
    again = _GET_PROC_V2(_lookup(first, b"cuGetProcAddress", v2=False))  # at CUDA 13: the _v2
    stream = ctypes.c_void_p()
    _STREAM_CREATE(_lookup(again, b"cuStreamCreate"))(ctypes.byref(stream), 0)
    assert driver.made == [("priority", 0, -3)]


def test_without_a_priority_creator_the_driver_functions_pass_through():
    driver = FakeDriver()
    bare = _DLSYM(lambda handle, name: driver.address(driver.get_proc_v2) if name == b"cuGetProcAddress_v2" else None)
    hooks = _Hooks(driver.address(bare), priority=-5)
    get_proc = _get_proc(hooks, b"cuGetProcAddress_v2")
    assert _lookup(get_proc, b"cuStreamCreate") == driver.address(driver.create)


@pytest.mark.parametrize("value, wanted", [(None, -1000), ("default", None), (" -2 ", -2)])
def test_the_priority_comes_from_the_environment(value, wanted):
    environ = {} if value is None else {"BATCHSCORE_NVJPEG_STREAM_PRIORITY": value}
    assert nvjpeg_streams.wanted_priority(environ) == wanted


def test_a_bad_priority_is_named():
    with pytest.raises(ValueError, match="BATCHSCORE_NVJPEG_STREAM_PRIORITY must be an integer"):
        nvjpeg_streams.wanted_priority({"BATCHSCORE_NVJPEG_STREAM_PRIORITY": "high"})


def _run(code: str, **env) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


INSTALL = """
import ctypes, _ctypes
from scoring import nvjpeg_streams
print(nvjpeg_streams.raise_priority(ctypes.CDLL(_ctypes.__file__)))
print(ctypes.CDLL(None).getpid() > 0)
print(nvjpeg_streams.raise_priority(ctypes.CDLL(_ctypes.__file__)))
print(nvjpeg_streams.state())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GOT slots: Linux only")
def test_installed_in_a_library_its_lookups_go_on_working():
    # _ctypes stands in for libnvjpeg: its dlsym goes through the hooks, in a process of its own
    assert _run(INSTALL) == ["None", "True", "None",
                             "priority -1000 (no stream made since, 1 lookups; nvJPEG's runtime may have started before)"]


def test_left_alone_when_asked_or_misconfigured():
    assert _run(INSTALL, BATCHSCORE_NVJPEG_STREAM_PRIORITY="default")[0] == \
        "left as nvJPEG makes them: BATCHSCORE_NVJPEG_STREAM_PRIORITY=default"
    lines = _run(INSTALL, BATCHSCORE_NVJPEG_STREAM_PRIORITY="high")
    assert lines[0].startswith("BATCHSCORE_NVJPEG_STREAM_PRIORITY must be an integer") and lines[3] == lines[0]


def test_libnvjpeg_is_loaded_before_nvimgcodec_is_imported(monkeypatch):
    # importing nvImageCodec starts nvJPEG's runtime: the priority must be set before (scoring.gpu_decode)
    import importlib.abc

    from scoring import gpu_decode, nvjpeg_hardware

    order = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "nvidia":
                order.append(name)
            return None

    monkeypatch.setattr(nvjpeg_hardware, "load_library", lambda: order.append("libnvjpeg"))
    monkeypatch.delenv("BATCHSCORE_NVJPEG_HARDWARE", raising=False)
    for name in [m for m in sys.modules if m.split(".")[0] == "nvidia"]:
        monkeypatch.delitem(sys.modules, name)
    spy = Spy()
    sys.meta_path.insert(0, spy)
    try:
        try:
            gpu_decode._import_nvimgcodec()
        except gpu_decode.GpuDecodeError:
            pass  # no nvImageCodec on this machine
    finally:
        sys.meta_path.remove(spy)
    assert order[0] == "libnvjpeg" and order[1].startswith("nvidia"), order
