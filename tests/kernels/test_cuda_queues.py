"""The CUDA hardware-queue default: set before any context exists, never over the user's choice."""

import os

import pytest

from kernels.cuda import HARDWARE_QUEUES, prefer_more_hardware_queues


def test_the_default_is_set_and_a_users_choice_is_kept(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    prefer_more_hardware_queues()
    assert os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] == HARDWARE_QUEUES
    monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", "4")
    prefer_more_hardware_queues()
    assert os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] == "4"


def test_the_cli_sets_it_before_it_does_anything(monkeypatch):
    from launchers.cli import main

    monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] == HARDWARE_QUEUES
