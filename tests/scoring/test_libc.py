"""scoring.libc: the C library, loaded once, on Linux only."""

from __future__ import annotations

import sys

import pytest

from scoring import libc


def test_linux_libc_is_loaded_once_and_only_on_linux(monkeypatch):
    if sys.platform.startswith("linux"):
        first = libc.linux_libc()
        assert first is not None and libc.linux_libc() is first
        assert first.getpid() > 0  # a real C library
    monkeypatch.setattr(libc.sys, "platform", "darwin")
    assert libc.linux_libc() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's C library")
def test_a_library_that_cannot_be_loaded_gives_none(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no such library")

    monkeypatch.setattr(libc, "_libc", None)
    monkeypatch.setattr(libc.ctypes, "CDLL", refuse)
    assert libc.linux_libc() is None
