"""Session 24, call 6's trial, applied to the device's copy only (never to the repository):
TRIAL_STREAMING=1 has the preprocessing kernels load the decoded images with __ldcs and store the
model's rows with __stcs (cache-streaming: evict-first in L2) instead of __ldg and plain stores,
so that the decoders' 220 MB a batch pass through L2 without pushing the engine's data out."""
from pathlib import Path

path = Path("scoring/resize_kernel.py")
text = path.read_text()
assert "def kernel_source(" in text and "__ldg(q + i)" in Path("scoring/resize_tiles.py").read_text()
text += '''

_trial_kernel_source = kernel_source


def kernel_source(layout, dtype, tiled=False):
    source, name = _trial_kernel_source(layout, dtype, tiled)
    if __import__("os").environ.get("TRIAL_STREAMING") == "1":
        edits = [("__ldg(q + i)", "__ldcs(q + i)"), ("{ out[i] = v; }", "{ __stcs(out + i, v); }"),
                 ("    out[i] = h;", "    __stcs(out + i, h);")]
        for old, new in edits:
            assert source.count(old) <= 1, old
            source = source.replace(old, new)
        name = name  # same name: one process runs one variant
    return source, name
'''
path.write_text(text)
print("trial patch 3 applied")
