"""The manifest of an output directory: which shards' part files are complete, for resume and checks.

A worker records each part it finishes (scoring.outputs.PartWriter writes it); a rerun of the job
skips the shards recorded here, and `verify()` checks that every recorded part is still there and
unchanged. The records live in `out_dir/manifest.json` and, until a launcher folds them in, in one
journal per writer under `out_dir/manifest.journal/` (see Manifest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scoring.errors import OutputError

log = logging.getLogger(__name__)

try:  # POSIX: serialise manifest folds from several processes on one host
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writer at a time is the caller's job
    fcntl = None

PARTS_DIR = "parts"  # where the part files are, in the output directory
MANIFEST_NAME = "manifest.json"
JOURNAL_DIR = "manifest.journal"  # one append-only file of records per writer (see Manifest)
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class PartInfo:
    """A finished part: what the manifest records."""

    key: str
    file: str  # relative to the output directory, e.g. "parts/part-00003.parquet"
    rows: int
    errors: int
    sha256: str
    bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PartInfo:
        return cls(key=str(data["key"]), file=str(data["file"]), rows=int(data["rows"]),
                   errors=int(data["errors"]), sha256=str(data["sha256"]), bytes=int(data.get("bytes", 0)))


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Verification:
    """What Manifest.verify() found. `ok` when every recorded part is present and unchanged."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)  # recorded, but the file is gone
    modified: list[str] = field(default_factory=list)  # the file's sha256 differs from the record
    unrecorded: list[str] = field(default_factory=list)  # part files the manifest does not list

    @property
    def ok(self) -> bool:
        return not self.missing and not self.modified

    def __str__(self) -> str:
        if self.ok:
            text = f"all {self.checked} parts present and unchanged"
        else:
            problems = []
            if self.missing:
                problems.append(f"{len(self.missing)} missing ({', '.join(self.missing)})")
            if self.modified:
                problems.append(f"{len(self.modified)} modified since they were written ({', '.join(self.modified)})")
            text = f"{self.checked} parts checked: " + "; ".join(problems)
        if self.unrecorded:
            text += f"; {len(self.unrecorded)} part files not in the manifest ({', '.join(self.unrecorded)})"
        return text


class Manifest:
    """The shards whose part files are complete: `out_dir/manifest.json` plus journals.

    A worker's record() appends one line to its own journal, `out_dir/manifest.journal/<writer>.jsonl`:
    no lock and no rewrite, so a record costs the same with 8 workers and 600 parts as with one.
    The first design rewrote the whole manifest.json under a host-wide lock at every shard, on the
    worker's main thread. The 8 x H200 scaling run records 640 shards of 3,750 rows in about 10 s;
    on the 2-core dev box 640 such records kept each of 8 recording processes inside record() for
    6.2 s, against 0.01 s with journals (`python benchmarks/manifest_records.py OUT`,
    benchmarks/results/manifest_records_cpu_2026-11-22_s9_*.json). On the H200s, Ray's steady
    efficiency at 8 GPUs went from 91-92% to 96% with journals, mpi's stayed at 85-88% (one
    machine each; benchmarks/results/scaling/h200x8_2026-11-22_s9_weak*/NOTES.md).

    close() closes the writer's journal. compact() folds every journal into manifest.json (re-read,
    merged and rewritten through a temporary file and os.replace, under an advisory lock) and
    removes them: a launcher calls it before its workers start and after they have all ended, so
    no journal is folded while its writer may still append, and no two folds race (the lock may
    not hold across hosts on a network filesystem; a single folder needs none). Until then a
    reader gets the journals' records too, and parts() reads the journals before manifest.json,
    so a reader never misses a record that a fold moves from one to the other.

    A journal line is written and flushed, not fsynced: the part file it names is fsynced before
    it, and a record lost to a power cut only means that shard is scored again. For the same reason
    a line without its newline (being written, or torn by a kill) is not read, and a whole line that
    does not parse is skipped with a warning.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        self.journal_dir = self.out_dir / JOURNAL_DIR
        self._lock = threading.Lock()
        self._journal = None  # this writer's journal file, opened at the first record
        self._journal_path: Path | None = None

    # -- reading -------------------------------------------------------------------------------

    def parts(self) -> dict[str, PartInfo]:
        """Every recorded part, by shard key (read fresh from disk)."""
        journaled = self._journal_records()  # first: see the class docstring
        parts = self._folded_parts()
        parts.update(journaled)
        return parts

    def done(self) -> set[str]:
        """Keys of the shards already written: a rerun skips them."""
        return set(self.parts())

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts().values())

    def _folded_parts(self) -> dict[str, PartInfo]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            if data.get("format") != MANIFEST_FORMAT:
                raise OutputError(f"manifest {self.path} has format {data.get('format')!r}; this batchscore "
                                  f"reads format {MANIFEST_FORMAT}")
            return {p["key"]: PartInfo.from_dict(p) for p in data["parts"]}
        except OutputError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OutputError(f"manifest {self.path} is not a batchscore manifest ({exc}); move it away "
                              f"to start the job afresh") from None

    def _journals(self) -> list[Path]:
        try:
            return sorted(p for p in self.journal_dir.iterdir() if p.suffix == ".jsonl")
        except FileNotFoundError:
            return []

    def _journal_records(self) -> dict[str, PartInfo]:
        parts: dict[str, PartInfo] = {}
        for journal in self._journals():
            try:
                text = journal.read_text(encoding="utf-8")
            except FileNotFoundError:  # folded meanwhile: manifest.json, read next, has its records
                continue
            # The text after the last newline is a line being written, or the torn end of a
            # killed writer's journal: not a record yet.
            for number, line in enumerate(text.split("\n")[:-1], 1):
                try:
                    info = PartInfo.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.warning("manifest journal %s line %d does not parse; skipped: that shard is scored "
                                "again", journal, number)
                    continue
                parts[info.key] = info
        return parts

    # -- writing -------------------------------------------------------------------------------

    def record(self, info: PartInfo) -> None:
        """Add (or replace) one finished part: one line at the end of this writer's journal."""
        line = json.dumps(info.to_dict(), separators=(",", ":")) + "\n"
        with self._lock:
            if self._journal is None:
                self.journal_dir.mkdir(parents=True, exist_ok=True)
                name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
                self._journal_path = self.journal_dir / name
                self._journal = open(self._journal_path, "a", encoding="utf-8")
            self._journal.write(line)
            self._journal.flush()

    def close(self) -> None:
        """Close this writer's journal (its records stay there until compact()). Recording again
        afterwards starts a new one."""
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = self._journal_path = None

    def compact(self) -> None:
        """Fold every journal into manifest.json and remove them: only while no worker records
        into this directory (a launcher, before its workers start and after they end)."""
        journals = self._journals()
        if not journals:
            return
        with self._locked():
            parts = self.parts()
            if parts or self.path.exists():
                self._write(parts)
            for journal in journals:  # after manifest.json holds their records
                journal.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: a writer that should not be there
            self.journal_dir.rmdir()

    def _write(self, parts: dict[str, PartInfo]) -> None:
        data = {
            "format": MANIFEST_FORMAT,
            "parts": [parts[key].to_dict() for key in sorted(parts)],
            "rows": sum(p.rows for p in parts.values()),
            "errors": sum(p.errors for p in parts.values()),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".tmp", dir=self.out_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _locked(self):
        with self._lock:  # threads of this process
            if fcntl is None:  # pragma: no cover
                yield
                return
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / f".{MANIFEST_NAME}.lock", "a") as lock:  # other processes
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                except OSError:  # pragma: no cover - a filesystem without locks (some NFS mounts)
                    yield
                    return
                try:
                    yield
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- checking ------------------------------------------------------------------------------

    def verify(self) -> Verification:
        """Check every recorded part exists and still has the recorded sha256."""
        parts = self.parts()
        result = Verification(checked=len(parts))
        for key in sorted(parts):
            path = self.out_dir / parts[key].file
            if not path.is_file():
                result.missing.append(key)
            elif file_sha256(path) != parts[key].sha256:
                result.modified.append(key)
        recorded = {Path(p.file).name for p in parts.values()}
        parts_dir = self.out_dir / PARTS_DIR
        if parts_dir.is_dir():
            result.unrecorded = sorted(p.name for p in parts_dir.glob("*.parquet")
                                       if p.name not in recorded and not p.name.startswith("."))
        return result
