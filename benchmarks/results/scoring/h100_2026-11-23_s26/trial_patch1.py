"""Session 26, call 1's control, applied to the device's copy only (never to the repository):
TRIAL_F32=1 has GpuPending.result convert each batch's scores to float32 on the main loop, as
before 74443b4, so the committed float16 handover can be compared with it in one call."""
from pathlib import Path

path = Path("scoring/gpu_runner.py")
text = path.read_text()
old = "        return np.array(scores)  # a copy: the pinned buffer is reused two batches on\n"
new = ('        if os.environ.get("TRIAL_F32") == "1":\n'
       "            return np.array(scores, dtype=np.float32)\n" + old)
assert text.count(old) == 1, "gpu_runner.py changed"
text = text.replace(old, new)
assert "\nimport os\n" in text, "gpu_runner.py no longer imports os"
path.write_text(text)
print("trial patch 1 applied")
