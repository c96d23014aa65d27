import gc
import sys

import pytest


@pytest.fixture(autouse=True)
def _give_gpu_memory_back():
    """After each GPU test, hand the memory it freed back to the driver. Several test processes share
    one GPU (`-n 5` in the README), and CuPy keeps freed blocks in its pools for its own process: with five
    processes on an 80 GB H100, cuDNN in the others then failed to create handles and launch
    kernels (session 15). Nothing is imported where the test did not import CuPy."""
    yield
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return
    gc.collect()  # engines and contexts the test dropped release their arrays only when collected
    cupy.get_default_memory_pool().free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()
