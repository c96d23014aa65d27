"""Session 26, call 8's control, applied to the device's copy only (never to the repository):
TRIAL_OLD_READ=1 has scoring.dataset.read_chunk_rows return the batch size, so read_shard asks
Arrow for a batch at a time as before, and the row-group reads can be compared with it in one call."""
from pathlib import Path

path = Path("scoring/dataset.py")
text = path.read_text()
old = "    rows, nbytes = sum(group_rows), sum(group_bytes)\n"
new = ('    if os.environ.get("TRIAL_OLD_READ") == "1":\n'
       "        return batch_rows\n" + old)
assert text.count(old) == 1, "dataset.py changed"
assert "\nimport os\n" in text, "dataset.py no longer imports os"
path.write_text(text.replace(old, new))
print("trial patch 2 applied")
