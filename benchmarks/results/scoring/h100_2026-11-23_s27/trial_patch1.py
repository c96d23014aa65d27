"""Session 27, call 2's control, applied to the device's copy only (never to the repository):
with $TRIAL_NO_RESIZE=1, scoring.dataset._ask_arrow_for does nothing, so Arrow keeps a shard's
first batch size and the later batches straddle two of its batches and are copied (the code before
session 27); unset, the committed code runs."""
from pathlib import Path

path = Path("scoring/dataset.py")
text = path.read_text()
old = '    set_batch_size = getattr(getattr(pf, "reader", None), "set_batch_size", None)\n'
new = ('    if os.environ.get("TRIAL_NO_RESIZE") == "1":\n        return\n' + old)
assert text.count(old) == 1, "dataset.py changed"
assert "\nimport os\n" in text, "dataset.py no longer imports os"
path.write_text(text.replace(old, new))
print("trial patch 1 applied")
