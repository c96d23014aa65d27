"""Session 24, call 5's trial, applied to the device's copy only (never to the repository):
TRIAL_PITCH_ALIGN=A has nvJPEG's hardware decode write each decoded image's rows A bytes apart at
the least (3 x width rounded up to a multiple of A), so that every row starts aligned."""
from pathlib import Path

gpu_decode = Path("scoring/gpu_decode.py")
text = gpu_decode.read_text()
old = "        pitches = 3 * chosen.widths\n"
new = ("        align = int(__import__('os').environ.get('TRIAL_PITCH_ALIGN', '1'))\n"
       "        pitches = (3 * chosen.widths + align - 1) // align * align\n")
assert text.count(old) == 1, "gpu_decode.py changed"
gpu_decode.write_text(text.replace(old, new))
print("trial patch 2 applied")
