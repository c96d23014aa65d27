"""Session 24's trials, applied to the device's copy only (never to the repository):
TRIAL_SLOTS sets scoring.worker.GPU_DECODE_SLOTS; TRIAL_WARMUP=1 has each decoder thread decode its
first batch twice, the first time only to warm the decoder up (nvJPEG's state and buffers, ours)."""
from pathlib import Path

worker = Path("scoring/worker.py")
text = worker.read_text()
old = "GPU_DECODE_SLOTS = 4 "
assert text.count(old) == 1, "worker.py changed"
worker.write_text(text.replace(old, 'GPU_DECODE_SLOTS = int(os.environ.get("TRIAL_SLOTS", "4")) '))

pipeline = Path("scoring/pipeline.py")
text = pipeline.read_text()
old = """                buffer = self.ring.buffers[index]
                start = time.perf_counter()
"""
new = """                buffer = self.ring.buffers[index]
                if __import__("os").environ.get("TRIAL_WARMUP") == "1" and not getattr(decoder, "_trial_warm", False):
                    decoder._trial_warm = True
                    warm_start = time.perf_counter()
                    if read.route is not None:
                        decoder.decode_into(read.items, buffer, read.route)
                    else:
                        decoder.decode_into(read.items, buffer)
                    print(f"trial warm-up decode {1e3 * (time.perf_counter() - warm_start):.1f} ms", flush=True)
                start = time.perf_counter()
"""
assert text.count(old) == 1, "pipeline.py changed"
pipeline.write_text(text.replace(old, new))
print("trial patch applied")
