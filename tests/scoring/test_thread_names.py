import sys
import threading
from pathlib import Path

import pytest

from scoring.thread_names import MAX_NAME_BYTES, name_this_thread, os_thread_name


def test_long_names_keep_their_end():
    assert os_thread_name("prefetch-decode-2") == b"efetch-decode-2"
    assert len(os_thread_name("x" * 40)) == MAX_NAME_BYTES
    assert os_thread_name("read") == b"read"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names in /proc are Linux's")
def test_the_kernel_sees_the_name():
    seen = {}

    def body():
        seen["set"] = name_this_thread("bs-test-reader")
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == {"set": True, "comm": "bs-test-reader"}
    # the main thread's name is untouched
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip() != "bs-test-reader"
