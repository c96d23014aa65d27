"""Why the engine sat idle: each gap between two batches on the GPU, set against what the host was
doing then (issue #5: the GPU busy fraction stays at 0.90-0.95, and a host-side estimate of late
launches accounts for less than half of the idle time).

All times are host seconds (perf_counter); the GPU's batch times are mapped onto that clock from
one event recorded on an idle stream (worker_phase_probe does that). For each gap of over
`min_gap_ms` after the first `steady_after` batches:

- a decoded batch was there when the GPU went idle (handed over, not yet submitted): the calling
  thread was late. Its lateness splits into the time before it entered submit and the time inside
  submit before the batch's first event was recorded (a lock in the driver, or the GIL);
- none was there: the decoders were behind until the next hand-over, and the calling thread for
  the rest. What the decoder threads were doing when the GPU went idle is counted: in a decode
  call, waiting for a read, waiting for a free ring slot.
"""

from __future__ import annotations

import bisect


def _active(intervals: list[tuple[float, float]], at: float) -> int:
    return sum(1 for start, end in intervals if start <= at < end)


def idle_causes(batches: list[tuple[float, float]], handed: list[float], entered: list[float],
                decoder_intervals: dict[str, list[tuple[float, float]]], steady_after: int = 3,
                min_gap_ms: float = 1.0) -> dict:
    """batches: (GPU start, GPU end) per batch in submit order; handed: hand-over times of every
    decoded batch; entered: submit entry times in submit order; decoder_intervals: kind -> (start,
    end) of each decoder thread's "call", "read_wait" and "free_wait"."""
    handed = sorted(handed)
    gaps = host = host_before_submit = host_in_submit = behind = 0.0
    counts = {"host": 0, "decoders": 0}
    states: dict[str, int] = {}
    for i in range(max(1, steady_after + 1), len(batches)):
        idle_from, idle_to = batches[i - 1][1], batches[i][0]
        gap_ms = 1e3 * (idle_to - idle_from)
        if gap_ms <= min_gap_ms:
            continue
        gaps += gap_ms
        ready = bisect.bisect_right(handed, idle_from) - bisect.bisect_right(entered, idle_from)
        if ready > 0:
            counts["host"] += 1
            host += gap_ms
            entry = entered[i] if i < len(entered) else idle_to
            before = max(0.0, min(entry, idle_to) - idle_from)
            host_before_submit += 1e3 * before
            host_in_submit += gap_ms - 1e3 * before
            continue
        counts["decoders"] += 1
        k = bisect.bisect_right(handed, idle_from)
        next_hand_over = handed[k] if k < len(handed) else idle_to
        late_decoders = 1e3 * (min(next_hand_over, idle_to) - idle_from)
        behind += late_decoders
        host += gap_ms - late_decoders
        state = ", ".join(f"{kind} {_active(decoder_intervals.get(kind, []), idle_from)}"
                          for kind in ("call", "read_wait", "free_wait"))
        states[state] = states.get(state, 0) + 1
    return {"gaps_ms": round(gaps, 1), "gaps": counts["host"] + counts["decoders"],
            "batch_ready_gaps": counts["host"], "no_batch_ready_gaps": counts["decoders"],
            "decoders_behind_ms": round(behind, 1), "calling_thread_ms": round(host, 1),
            "calling_thread_before_submit_ms": round(host_before_submit, 1),
            "calling_thread_in_submit_ms": round(host_in_submit, 1),
            "decoder_threads_when_no_batch_was_ready": dict(sorted(states.items(), key=lambda kv: -kv[1]))}
