"""Session 26, call 9's variant, applied to the device's copy only (never to the repository):
$TRIAL_SLOTS sets scoring.worker.GPU_DECODE_SLOTS (the device slots beyond the first decoder's;
4, the committed value, where unset), so a deeper ring can be compared with the committed one in
one call."""
from pathlib import Path

path = Path("scoring/worker.py")
text = path.read_text()
old = "GPU_DECODE_SLOTS = 4  #"
new = 'GPU_DECODE_SLOTS = int(os.environ.get("TRIAL_SLOTS", "4"))  #'
assert text.count(old) == 1, "worker.py changed"
assert "\nimport os\n" in text, "worker.py no longer imports os"
path.write_text(text.replace(old, new))
print("trial patch 3 applied")
