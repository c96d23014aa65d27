"""Session 24, call 8's control, applied to the device's copy only (never to the repository):
TRIAL_NO_IRQ_LEAVE=1 has scoring.irq_cpus.leave_interrupt_cpus leave nothing (the code before it
landed), so the committed worker can be compared with it in one call."""
from pathlib import Path

path = Path("scoring/irq_cpus.py")
text = path.read_text()
old = '''    if allowed is None:
        if not hasattr(os, "sched_getaffinity"):'''
new = '''    if os.environ.get("TRIAL_NO_IRQ_LEAVE") == "1":
        return []
    if allowed is None:
        if not hasattr(os, "sched_getaffinity"):'''
assert text.count(old) == 1, "irq_cpus.py changed"
path.write_text(text.replace(old, new))
print("trial patch 4 applied")
