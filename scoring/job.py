"""Job specs: a TOML file that says which model scores which dataset, how, and where the rows go.

    [model]
    onnx = "resnet50.onnx"         # or plan = "resnet50.plan" (one of the two)
    precision = "fp16"             # fp32 | fp16 | int8 (building from ONNX only)
    max_batch = 256                # building from ONNX only; default: [run] batch

    [data]
    source = "images/"             # a Parquet file, a directory, a glob, or a list of these
    image_column = "image"         # default: detected
    id_column = "id"               # default: a column called "id", else the row index
    shard_rows = 2048              # rows per shard: the unit of work and of resume

    [preprocess]                   # scoring.decode.Preprocess; every key optional
    resize_shorter = 256
    crop = 224

    [output]
    dir = "predictions/"           # default: "<job file stem>-out" next to the job file
    top_k = 5
    labels = "imagenet_labels.txt" # one label per line
    raw = false                    # also keep the whole score vector

    [run]
    batch = 64
    workers = "auto"               # or a count
    device = "auto"                # auto | cpu | cuda
    decode = "auto"                # auto | cpu | gpu
    decode_threads = "auto"        # or a count
    decode_processes = "auto"      # decoders in child processes: auto | 0 | a count (see scoring.worker)
    gpu_decoders = "auto"          # GPU decoders per worker: auto (3) | a count
    gpu_decode_backends = "auto"   # nvImageCodec backends: auto ("all") | all | hw (scoring.gpu_decode)
    jpeg_hardware = "auto"         # nvJPEG's batched hardware JPEG decode where the GPU has it | off
    fail_fast = false              # stop at the first bad image instead of writing an error row
    pin_cpus = false               # GPU workers: run on the CPU cores next to the GPU (scoring.affinity)
    avoid_slow_cpus = "auto"       # busy threads leave CPUs that run them slowly, and GPU workers the CPUs that
                                   # take the GPU's interrupts: auto (GPU workers) | on | off
    gpu_wait = "auto"              # threads waiting for the GPU sleep or spin: auto (block) | block | spin
    launcher = "local"             # local | mpi | ray

`load_job(path)` checks every key (its type, its range, the values allowed) and raises `JobError`
with one sentence that names the section and key. Relative paths are resolved against the job
file's directory, so a job runs the same from any working directory. "auto" stays "auto": the
launcher resolves it on the machine that runs the job.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BatchscoreError
from scoring.decode import Preprocess
from scoring.errors import JobError, OutputError
from scoring.gpu_wait import GPU_WAITS
from scoring.outputs import OutputSpec, read_labels

__all__ = ["DataSpec", "JobError", "JobSpec", "ModelSpec", "OutputSettings", "Preprocess", "RunSpec",
           "load_job", "parse_job"]

PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("auto", "cpu", "cuda")
DECODERS = ("auto", "cpu", "gpu")
GPU_DECODE_BACKENDS = ("auto", "all", "hw")  # "all" and "hw": scoring.gpu_decode.BACKEND_PRESETS
JPEG_HARDWARE = ("auto", "off")  # scoring.nvjpeg_hardware; "off": every JPEG through nvImageCodec
AVOID_SLOW_CPUS = ("auto", "on", "off")  # scoring.slow_cpus; "auto": $BATCHSCORE_AVOID_SLOW_CPUS, else GPU workers
LAUNCHERS = ("local", "mpi", "ray")
SECTIONS = ("model", "data", "preprocess", "output", "run")


@dataclass
class ModelSpec:
    onnx: Path | None = None
    plan: Path | None = None
    precision: str = "fp32"
    max_batch: int | None = None  # None: [run] batch

    @property
    def path(self) -> Path:
        """The model file, whichever kind it is."""
        return self.plan if self.plan is not None else self.onnx


@dataclass
class DataSpec:
    source: str | list[str] = ""  # resolved: absolute path(s) or glob(s)
    image_column: str | None = None
    id_column: str | None = None
    shard_rows: int = 2048


@dataclass
class OutputSettings:
    dir: Path = Path("out")
    top_k: int = 5
    labels: Path | None = None
    raw: bool = False


@dataclass
class RunSpec:
    batch: int = 64
    workers: int | str = "auto"
    device: str = "auto"
    decode: str = "auto"
    decode_threads: int | str = "auto"
    decode_processes: int | str = "auto"
    gpu_decoders: int | str = "auto"
    gpu_decode_backends: str = "auto"
    jpeg_hardware: str = "auto"
    fail_fast: bool = False
    pin_cpus: bool = False
    avoid_slow_cpus: str = "auto"
    gpu_wait: str = "auto"
    launcher: str = "local"


@dataclass
class JobSpec:
    model: ModelSpec
    data: DataSpec
    preprocess: Preprocess = field(default_factory=Preprocess)
    output: OutputSettings = field(default_factory=OutputSettings)
    run: RunSpec = field(default_factory=RunSpec)
    path: Path | None = None  # the TOML file it came from

    @property
    def max_batch(self) -> int:
        """The largest batch the plan must accept."""
        return self.model.max_batch if self.model.max_batch is not None else self.run.batch

    def output_spec(self, num_classes: int | None = None) -> OutputSpec:
        """The OutputSpec for the workers, with the labels file read; given the model's class count,
        a labels file with fewer lines than classes is a JobError naming the file and both counts."""
        o = self.output
        try:
            if o.labels is None:
                return OutputSpec(top_k=o.top_k, raw=o.raw, num_classes=num_classes)
            return OutputSpec.from_labels_file(o.labels, top_k=o.top_k, raw=o.raw, num_classes=num_classes)
        except OutputError as exc:
            raise JobError(f"{self._where()}[output] labels: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (paths as strings), e.g. for the report."""
        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        out = {name: {f.name: plain(getattr(getattr(self, name), f.name))
                      for f in dataclasses.fields(getattr(self, name))}
               for name in SECTIONS}
        out["path"] = plain(self.path)
        return out

    def _where(self) -> str:
        return f"{self.path}: " if self.path else ""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_job(path: str | os.PathLike, *, check_files: bool = True) -> JobSpec:
    """Read and validate a job file. check_files=False skips checking that the model and labels
    files exist (e.g. to validate a spec on a machine that does not hold them)."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"job file {path} does not exist") from None
    except IsADirectoryError:
        raise JobError(f"job file {path} is a directory; give the .toml file") from None
    except UnicodeDecodeError:
        raise JobError(f"job file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"job file {path} is not valid TOML: {exc}") from None
    return parse_job(data, base_dir=path.resolve().parent, path=path.resolve(), check_files=check_files,
                     shown_as=str(path))


def parse_job(data: dict[str, Any], *, base_dir: str | os.PathLike = ".", path: Path | None = None,
              check_files: bool = True, shown_as: str | None = None) -> JobSpec:
    """Validate an already-parsed TOML document (a dict of sections). Error messages start with
    shown_as (default: path), the job file as the user named it."""
    v = _Validator(Path(base_dir).resolve(), shown_as or (str(path) if path else None))
    v.allowed("", data, SECTIONS)
    for name in SECTIONS:
        if name in data and not isinstance(data[name], dict):
            v.fail(f"[{name}] must be a table (a [{name}] section), got {_show(data[name])}")
    if "model" not in data:
        v.fail("[model] is missing: give onnx = \"model.onnx\" or plan = \"model.plan\"")
    if "data" not in data:
        v.fail("[data] is missing: give source = \"path/to/images.parquet\" (a file, directory or glob)")
    stem = path.stem if path is not None else "job"

    run = v.section("run", data.get("run", {}), RunSpec, {
        "batch": v.positive_int,
        "workers": v.auto_or_positive_int,
        "device": v.choice(DEVICES),
        "decode": v.choice(DECODERS),
        "decode_threads": v.auto_or_positive_int,
        "decode_processes": v.auto_or_count,
        "gpu_decoders": v.auto_or_positive_int,
        "gpu_decode_backends": v.choice(GPU_DECODE_BACKENDS),
        "jpeg_hardware": v.choice(JPEG_HARDWARE),
        "fail_fast": v.boolean,
        "pin_cpus": v.boolean,
        "avoid_slow_cpus": v.choice(AVOID_SLOW_CPUS),
        "gpu_wait": v.choice(GPU_WAITS),
        "launcher": v.choice(LAUNCHERS),
    })
    model = v.section("model", data["model"], ModelSpec, {
        "onnx": v.file_path(check_files),
        "plan": v.file_path(check_files),
        "precision": v.choice(PRECISIONS),
        "max_batch": v.positive_int,
    })
    given = data["model"]
    if ("onnx" in given) == ("plan" in given):
        v.fail("[model] needs exactly one of onnx = \"model.onnx\" (built before the run) or "
               "plan = \"model.plan\" (already built)" + (", not both" if "onnx" in given else ""))
    if "plan" in given:
        for key in ("precision", "max_batch"):
            if key in given:
                v.fail(f"[model] {key} applies when building from onnx; the plan {model.plan} was built "
                       f"with its own {key} (rebuild it, or give onnx = ... instead)")
    if model.max_batch is not None and run.batch > model.max_batch:
        v.fail(f"[run] batch {run.batch} is larger than [model] max_batch {model.max_batch}")

    data_spec = v.section("data", data["data"], DataSpec, {
        "source": v.source,
        "image_column": v.nonempty_str,
        "id_column": v.nonempty_str,
        "shard_rows": v.positive_int,
    })
    if "source" not in data["data"]:
        v.fail("[data] source is missing: give a Parquet file, a directory or a glob")
    if data_spec.image_column is not None and data_spec.image_column == data_spec.id_column:
        v.fail(f"[data] image_column and id_column are both '{data_spec.image_column}'")

    output = v.section("output", data.get("output", {}), OutputSettings, {
        "dir": v.dir_path,
        "top_k": v.positive_int,
        "labels": v.file_path(check_files),
        "raw": v.boolean,
    })
    if "dir" not in data.get("output", {}):
        output.dir = v.base_dir / f"{stem}-out"
    if check_files and output.labels is not None:
        try:
            read_labels(output.labels)
        except OutputError as exc:
            v.fail(f"[output] labels: {exc}")

    preprocess = v.preprocess(data.get("preprocess", {}))
    if run.device == "cpu" and run.decode == "gpu":
        v.fail("[run] decode = \"gpu\" needs a GPU, but [run] device = \"cpu\"")
    return JobSpec(model=model, data=data_spec, preprocess=preprocess, output=output, run=run, path=path)


# ---------------------------------------------------------------------------------------------
# Key checks: each returns the value to store or calls fail() with a sentence naming the key
# ---------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Validator:
    def __init__(self, base_dir: Path, shown_as: str | None) -> None:
        self.base_dir = base_dir
        self.shown_as = shown_as

    def fail(self, message: str):
        raise JobError(f"{self.shown_as}: {message}" if self.shown_as else message)

    def allowed(self, section: str, table: dict, keys) -> None:
        unknown = [k for k in table if k not in keys]
        if not unknown:
            return
        where = f"[{section}] has" if section else "the job file has"
        what = "key" if section else "section"
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(keys), n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        allowed = ", ".join(keys)
        self.fail(f"{where} unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                  f"the {what}s allowed{' in [' + section + ']' if section else ''} are: {allowed}")

    def section(self, name: str, table: dict, cls, checks: dict):
        self.allowed(name, table, list(checks))
        values = {key: checks[key](f"[{name}] {key}", table[key]) for key in checks if key in table}
        return cls(**values)

    # -- value kinds ---------------------------------------------------------------------------

    def positive_int(self, key: str, value: Any) -> int:
        if not _is_int(value) or value < 1:
            self.fail(f"{key} must be a positive integer, got {_show(value)}")
        return value

    def auto_or_count(self, key: str, value: Any) -> int | str:
        if value == "auto":
            return value
        if not _is_int(value) or value < 0:
            self.fail(f"{key} must be \"auto\" or a whole number (0 or more), got {_show(value)}")
        return value

    def auto_or_positive_int(self, key: str, value: Any) -> int | str:
        if value == "auto":
            return value
        if not _is_int(value) or value < 1:
            self.fail(f"{key} must be \"auto\" or a positive integer, got {_show(value)}")
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false, got {_show(value)}")
        return value

    def nonempty_str(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            self.fail(f"{key} must be a non-empty string, got {_show(value)}")
        return value

    def choice(self, allowed: tuple[str, ...]):
        def check(key: str, value: Any) -> str:
            if value not in allowed or not isinstance(value, str):
                self.fail(f"{key} must be one of {', '.join(_show(a) for a in allowed)}; got {_show(value)}")
            return value
        return check

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(self.base_dir / path))

    def file_path(self, check_files: bool):
        def check(key: str, value: Any) -> Path:
            path = self.resolve(self.nonempty_str(key, value))
            if check_files and not path.is_file():
                reason = "is a directory, not a file" if path.is_dir() else "does not exist"
                self.fail(f"{key}: {path} {reason}" + (f" (given as \"{value}\", relative to {self.base_dir})"
                                                        if not Path(value).expanduser().is_absolute() else ""))
            return path
        return check

    def dir_path(self, key: str, value: Any) -> Path:
        path = self.resolve(self.nonempty_str(key, value))
        if path.exists() and not path.is_dir():
            self.fail(f"{key}: {path} exists and is not a directory")
        return path

    def source(self, key: str, value: Any) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                self.fail(f"{key} is an empty list; give at least one file, directory or glob")
            return [str(self.resolve(self.nonempty_str(f"{key}[{i}]", item))) for i, item in enumerate(value)]
        return str(self.resolve(self.nonempty_str(key, value)))

    def float_triple(self, key: str, value: Any, positive: bool) -> tuple[float, float, float]:
        ok = (isinstance(value, list) and len(value) == 3
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value))
        if ok and positive:
            ok = all(x > 0 for x in value)
        if not ok:
            kind = "positive numbers" if positive else "numbers"
            self.fail(f"{key} must be a list of 3 {kind} (R, G, B), got {_show(value)}")
        return tuple(float(x) for x in value)

    def preprocess(self, table: dict) -> Preprocess:
        """Keys and defaults come from scoring.decode.Preprocess, which also checks the values
        (its messages name the key); mean and std get a stricter TOML type check here."""
        self.allowed("preprocess", table, [f.name for f in dataclasses.fields(Preprocess)])
        values = dict(table)
        for key in ("mean", "std"):
            if key in values:
                values[key] = self.float_triple(f"[preprocess] {key}", values[key], positive=key == "std")
        for key in ("resize_shorter", "crop"):
            if key in values:
                self.positive_int(f"[preprocess] {key}", values[key])
        try:
            return Preprocess(**values)
        except (ValueError, TypeError, BatchscoreError) as exc:
            message = str(exc)
            self.fail(message if message.startswith("[preprocess]") else f"[preprocess] {message}")
