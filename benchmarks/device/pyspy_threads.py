"""Where a worker's threads were, from a py-spy profile: samples per thread, and each thread's most
sampled places.

    py-spy record --gil --subprocesses --nonblocking --threads --rate 500 --format raw -o GIL.txt -- CMD
    python3 benchmarks/device/pyspy_threads.py GIL.txt [--process spawn_main] [--rate 500]
                                               [--window S] [--depth 3] [--top 5] [--count TEXT ...]
                                               [--json OUT]

A raw py-spy profile (`--format raw`, collapsed stacks: "frame;frame;... count", with --threads a
"thread (TID): NAME" frame after the process's) counts, per stack, the samples taken there. With
--gil only the thread holding the GIL is sampled, so a thread's samples over the rate are the
seconds it held the GIL; without it, the seconds it was on a CPU. The GIL holder's stack is what
`--gil` shows; the threads waiting for it are not sampled at all.

Samples whose stack passes through an import (`<frozen importlib`) are set apart as start-up,
and so are a worker's main thread's samples outside its scoring loop (scoring.worker's `_score`):
what is left is the scoring itself. Only processes whose name holds --process are read (a
local-launcher worker's command holds "spawn_main"). --window S (the scoring's seconds, say the
worker's rows over its first-batch-to-end rate) adds each thread's share of it. --count TEXT
(repeatable) adds, per thread, the scoring samples whose stack holds TEXT anywhere ("route_batch":
the reader's routing, whatever it called).

Gzipped profiles (RAW.txt.gz) are read as they are.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_MARKERS = ("<frozen importlib",)
SCORING_LOOP = "_score ("  # scoring.worker._score: a worker's main thread scores inside it


@dataclass
class ThreadSamples:
    name: str
    scoring: int = 0
    startup: int = 0
    places: collections.Counter = field(default_factory=collections.Counter)
    counted: collections.Counter = field(default_factory=collections.Counter)  # --count TEXT -> samples


def parse_line(line: str) -> tuple[str, str, list[str], int] | None:
    """(process, thread, frames below the thread, samples) of one raw line; None for a blank one.
    A process frame may hold ';' (a `python -c "a; b"` command line): the thread frame, the first
    that starts with "thread (", is what splits the stack."""
    line = line.rstrip("\n")
    if not line.strip():
        return None
    stack, _, count = line.rpartition(" ")
    if not stack or not count.isdigit():
        raise ValueError(f"not a raw py-spy line (frames, a space, a sample count): {line[:120]!r}")
    frames = stack.split(";")
    at = next((i for i, frame in enumerate(frames) if frame.startswith("thread (")), None)
    if at is None:
        raise ValueError(f"no thread frame (was the profile recorded with --threads?): {line[:120]!r}")
    return ";".join(frames[:at]), frames[at], frames[at + 1:], int(count)


def thread_name(frame: str) -> str:
    """"thread (770): MainThread" -> "MainThread"; a thread without a name keeps its frame."""
    _, colon, name = frame.partition("): ")
    return name.strip() if colon and name.strip() else frame


def place(frames: list[str], depth: int) -> str:
    """The innermost `depth` frames, innermost last, as "function (file:line)" joined by " < "."""
    return " < ".join(frames[-depth:]) if frames else "(no Python frame)"


def is_startup(thread: str, frames: list[str]) -> bool:
    if any(marker in frame for frame in frames for marker in STARTUP_MARKERS):
        return True
    return thread == "MainThread" and not any(SCORING_LOOP in frame for frame in frames)


def summarize(lines, process: str = "spawn_main", depth: int = 3, count_texts: tuple[str, ...] = ()
              ) -> dict[str, ThreadSamples]:
    threads: dict[str, ThreadSamples] = {}
    for number, line in enumerate(lines, 1):
        try:
            parsed = parse_line(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        if parsed is None or process not in parsed[0]:
            continue
        _, frame, frames, count = parsed
        name = thread_name(frame)
        samples = threads.setdefault(name, ThreadSamples(name))
        if is_startup(name, frames):
            samples.startup += count
        else:
            samples.scoring += count
            samples.places[place(frames, depth)] += count
            for text in count_texts:
                if any(text in frame for frame in frames):
                    samples.counted[text] += count
    return threads


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return handle.readlines()


def report(threads: dict[str, ThreadSamples], rate: float, window: float | None, top: int) -> dict:
    ordered = sorted(threads.values(), key=lambda t: -t.scoring)
    rows = []
    for t in ordered:
        row = {"thread": t.name, "scoring_samples": t.scoring, "startup_samples": t.startup,
               "scoring_s": round(t.scoring / rate, 3), "counted": dict(t.counted),
               "places": [{"where": where, "samples": n} for where, n in t.places.most_common(top)]}
        if window:
            row["share_of_window"] = round(t.scoring / rate / window, 4)
        rows.append(row)
    total = sum(t.scoring for t in ordered)
    out = {"rate_hz": rate, "scoring_samples": total, "scoring_s": round(total / rate, 3), "threads": rows}
    if window:
        out["window_s"] = window
        out["share_of_window"] = round(total / rate / window, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--process", default="spawn_main", help="read only processes whose name holds this")
    parser.add_argument("--rate", type=float, default=500.0, help="py-spy's --rate (samples a second)")
    parser.add_argument("--window", type=float, help="the scoring's seconds, for each thread's share of them")
    parser.add_argument("--depth", type=int, default=3, help="frames in a place")
    parser.add_argument("--top", type=int, default=5, help="places shown per thread")
    parser.add_argument("--count", action="append", default=[], metavar="TEXT",
                        help="per thread, the samples whose stack holds TEXT (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.depth < 1 or args.top < 1 or (args.window is not None and args.window <= 0):
        parser.error("--rate, --depth, --top and --window must be positive")
    if not args.raw.is_file():
        parser.error(f"{args.raw} is not a file")
    try:
        threads = summarize(read_lines(args.raw), args.process, args.depth, tuple(args.count))
    except ValueError as exc:
        print(f"pyspy_threads: {args.raw}: {exc}", file=sys.stderr)
        return 1
    if not threads:
        print(f"pyspy_threads: no samples of a process whose name holds {args.process!r} in {args.raw}",
              file=sys.stderr)
        return 1
    summary = report(threads, args.rate, args.window, args.top)
    head = f"{args.raw.name}: {summary['scoring_samples']} samples while scoring ({summary['scoring_s']} s"
    head += f", {summary['share_of_window']:.1%} of {args.window} s)" if args.window else ")"
    print(head)
    for row in summary["threads"]:
        share = f" ({row['share_of_window']:.1%})" if args.window else ""
        print(f"  {row['thread']}: {row['scoring_samples']} samples, {row['scoring_s']} s{share}; "
              f"{row['startup_samples']} in start-up")
        for text, n in row["counted"].items():
            print(f"      {n:>5}  with {text!r} in the stack")
        for p in row["places"]:
            print(f"      {p['samples']:>5}  {p['where']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
