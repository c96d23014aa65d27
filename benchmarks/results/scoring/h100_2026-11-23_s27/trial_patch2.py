"""Session 27, call 4's load, applied to the device's copy only (never to the repository): with
$TRIAL_GIL_LOAD=F (0 < F < 1), a worker's scoring loop starts a thread that, every millisecond,
runs Python bytecode for F of it (holding the GIL, which it gives up at the interpreter's switch
interval when another thread asks, as the reader's numpy routing does between its calls) and
sleeps the rest. It tells whether the GIL's load moves the end-to-end share: call 1 and 3 found
the worker's threads hold it 20-31% of the scoring time (pyspy_threads.py)."""
from pathlib import Path

path = Path("scoring/worker.py")
text = path.read_text()
old = "    main_cpu_at_start = time.thread_time()\n"
new = old + '''    _trial_load = float(os.environ.get("TRIAL_GIL_LOAD", "0") or 0)
    if _trial_load > 0:
        import threading

        def _hold_the_gil(share=_trial_load):
            while True:
                start = time.perf_counter()
                while time.perf_counter() - start < share * 1e-3:
                    pass
                time.sleep((1 - share) * 1e-3)

        threading.Thread(target=_hold_the_gil, name="trial-gil-load", daemon=True).start()
'''
assert text.count(old) == 1, "worker.py changed"
assert "\nimport os\n" in text, "worker.py no longer imports os"
path.write_text(text.replace(old, new))
print("trial patch 2 applied")
