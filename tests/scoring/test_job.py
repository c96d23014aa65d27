"""scoring/job.py: job specs from TOML, every key checked with a message that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import BatchscoreError
from scoring.decode import Preprocess
from scoring.errors import JobError
from scoring.job import JobSpec, load_job, parse_job

REPO = Path(__file__).resolve().parents[2]


def write_job(tmp_path: Path, text: str, name: str = "job.toml") -> Path:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "model.plan").write_bytes(b"plan")
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
[model]
onnx = "model.onnx"
[data]
source = "images/"
"""


def job_with(tmp_path: Path, section: str, body: str) -> Path:
    """MINIMAL plus lines in one section (the section is added or extended)."""
    text = MINIMAL
    if f"[{section}]" in text:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{body}\n")
    else:
        text += f"[{section}]\n{body}\n"
    return write_job(tmp_path, text)


def test_defaults_and_relative_paths(tmp_path, monkeypatch):
    path = write_job(tmp_path, MINIMAL)
    monkeypatch.chdir("/")  # paths follow the job file, not the working directory
    job = load_job(path)
    assert isinstance(job, JobSpec) and job.path == path.resolve()
    assert job.model.onnx == tmp_path / "model.onnx" and job.model.plan is None
    assert job.model.path == job.model.onnx
    assert job.model.precision == "fp32" and job.model.max_batch is None
    assert job.data.source == str(tmp_path / "images")
    assert job.data.image_column is None and job.data.id_column is None and job.data.shard_rows == 2048
    assert job.preprocess == Preprocess()
    assert job.output.dir == tmp_path / "job-out" and job.output.top_k == 5
    assert job.output.labels is None and job.output.raw is False
    run = job.run
    assert (run.batch, run.workers, run.device, run.decode, run.decode_threads, run.fail_fast, run.pin_cpus,
            run.launcher) == (64, "auto", "auto", "auto", "auto", False, False, "local")
    assert job.max_batch == 64  # no [model] max_batch: the run's batch
    json.dumps(job.to_dict())  # JSON-able for the report


def test_every_key_set(tmp_path):
    (tmp_path / "labels.txt").write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    path = write_job(tmp_path, """
[model]
onnx = "model.onnx"
precision = "fp16"
max_batch = 256

[data]
source = ["shards/a/*.parquet", "/abs/b.parquet"]
image_column = "jpeg"
id_column = "key"
shard_rows = 4096

[preprocess]
resize_shorter = 342
crop = 299
mean = [0.5, 0.5, 0]
std = [0.5, 0.5, 1]
layout = "NHWC"
dtype = "float16"
channel_order = "BGR"

[output]
dir = "../out/run1"
top_k = 10
labels = "labels.txt"
raw = true

[run]
batch = 128
workers = 8
device = "cuda"
decode = "gpu"
decode_threads = 6
fail_fast = true
pin_cpus = true
launcher = "mpi"
""")
    job = load_job(path)
    assert job.model.precision == "fp16" and job.model.max_batch == 256 and job.max_batch == 256
    assert job.data.source == [str(tmp_path / "shards/a/*.parquet"), "/abs/b.parquet"]  # globs kept
    assert (job.data.image_column, job.data.id_column, job.data.shard_rows) == ("jpeg", "key", 4096)
    assert job.preprocess == Preprocess(resize_shorter=342, crop=299, mean=(0.5, 0.5, 0.0), std=(0.5, 0.5, 1.0),
                                        layout="NHWC", dtype="float16", channel_order="BGR")
    assert job.output.dir == tmp_path.parent / "out" / "run1"  # normalised, no ".."
    assert job.output.labels == tmp_path / "labels.txt" and job.output.top_k == 10 and job.output.raw
    assert (job.run.batch, job.run.workers, job.run.device, job.run.decode, job.run.decode_threads,
            job.run.fail_fast, job.run.pin_cpus, job.run.launcher) == (128, 8, "cuda", "gpu", 6, True, True, "mpi")


def test_output_spec_reads_labels_and_checks_the_class_count(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    job = load_job(job_with(tmp_path, "output", 'labels = "labels.txt"\ntop_k = 2\nraw = true'))
    spec = job.output_spec(num_classes=3)
    assert spec.labels == ["cat", "dog", "bird"] and spec.top_k == 2 and spec.raw and spec.num_classes == 3
    with pytest.raises(JobError, match=r"\[output\] labels: labels file .*labels\.txt has 3 labels but the "
                                       r"model has 1000 classes"):
        job.output_spec(num_classes=1000)
    assert load_job(write_job(tmp_path, MINIMAL)).output_spec(10).labels is None


@pytest.mark.parametrize("section, body, message", [
    ("run", "batch = 0", r"\[run\] batch must be a positive integer, got 0"),
    ("run", "batch = true", r"\[run\] batch must be a positive integer, got true"),
    ("run", 'batch = "64"', r'\[run\] batch must be a positive integer, got "64"'),
    ("run", "batch = 6.4", r"\[run\] batch must be a positive integer, got 6.4"),
    ("run", 'workers = "all"', r'\[run\] workers must be "auto" or a positive integer, got "all"'),
    ("run", "workers = -2", r'\[run\] workers must be "auto" or a positive integer, got -2'),
    ("run", 'decode_threads = 0', r'\[run\] decode_threads must be "auto" or a positive integer'),
    ("run", 'device = "gpu"', r'\[run\] device must be one of "auto", "cpu", "cuda"; got "gpu"'),
    ("run", 'decode = "nvjpeg"', r'\[run\] decode must be one of "auto", "cpu", "gpu"; got "nvjpeg"'),
    ("run", 'launcher = "slurm"', r'\[run\] launcher must be one of "local", "mpi", "ray"; got "slurm"'),
    ("run", 'fail_fast = "yes"', r'\[run\] fail_fast must be true or false, got "yes"'),
    ("run", "pin_cpus = 1", r'\[run\] pin_cpus must be true or false, got 1'),
    ("run", "gpu_decoders = 0", r'\[run\] gpu_decoders must be "auto" or a positive integer, got 0'),
    ("run", 'gpu_decode_backends = "cpu"', r'\[run\] gpu_decode_backends must be one of "auto", "all", "hw"; got "cpu"'),
    ("run", 'jpeg_hardware = "on"', r'\[run\] jpeg_hardware must be one of "auto", "off"; got "on"'),
    ("run", 'avoid_slow_cpus = true', r'\[run\] avoid_slow_cpus must be one of "auto", "on", "off"; got true'),
    ("run", 'gpu_wait = "sleep"', r'\[run\] gpu_wait must be one of "auto", "block", "spin"; got "sleep"'),
    ("run", 'device = "cpu"\ndecode = "gpu"', r'decode = "gpu" needs a GPU, but \[run\] device = "cpu"'),
    ("model", 'precision = "fp8"', r'\[model\] precision must be one of "fp32", "fp16", "int8"; got "fp8"'),
    ("model", "max_batch = 0", r"\[model\] max_batch must be a positive integer, got 0"),
    ("model", "max_batch = 32", r"\[run\] batch 64 is larger than \[model\] max_batch 32"),
    ("model", 'plan = "model.plan"', r"exactly one of onnx .* or plan .*, not both"),
    ("data", "shard_rows = -1", r"\[data\] shard_rows must be a positive integer, got -1"),
    ("data", 'image_column = ""', r'\[data\] image_column must be a non-empty string, got ""'),
    ("data", 'image_column = "x"\nid_column = "x"', r"image_column and id_column are both 'x'"),
    ("output", "top_k = 0", r"\[output\] top_k must be a positive integer, got 0"),
    ("output", 'raw = 1', r"\[output\] raw must be true or false, got 1"),
    ("output", 'labels = "nope.txt"', r"\[output\] labels: .*nope\.txt does not exist "
                                      r"\(given as \"nope\.txt\", relative to "),
    ("output", 'dir = "model.onnx"', r"\[output\] dir: .*model\.onnx exists and is not a directory"),
    ("preprocess", "crop = 0", r"\[preprocess\] crop must be a positive integer, got 0"),
    ("preprocess", "mean = [0.5, 0.5]", r"\[preprocess\] mean must be a list of 3 numbers \(R, G, B\)"),
    ("preprocess", 'mean = ["a", "b", "c"]', r"\[preprocess\] mean must be a list of 3 numbers"),
    ("preprocess", "std = [0.5, 0, 0.5]", r"\[preprocess\] std must be a list of 3 positive numbers"),
    ("preprocess", 'layout = "CHW"', r"\[preprocess\] layout must be one of"),
    ("preprocess", 'dtype = "int8"', r"\[preprocess\] dtype must be one of"),
])
def test_bad_values_name_the_key(tmp_path, section, body, message):
    path = job_with(tmp_path, section, body)
    with pytest.raises(JobError, match=message) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path}: ")  # which file
    assert isinstance(info.value, BatchscoreError)  # the CLI shows one paragraph, no traceback


@pytest.mark.parametrize("section, body, message", [
    ("run", "bach = 32", r"\[run\] has unknown key 'bach' \(did you mean 'batch'\?\); the keys allowed in "
                         r"\[run\] are: batch, workers, device, decode, decode_threads, decode_processes, gpu_decoders, "
                         r"gpu_decode_backends, jpeg_hardware, fail_fast, pin_cpus, avoid_slow_cpus, gpu_wait, "
                         r"launcher"),
    ("output", "topk = 3\ncolour = 1", r"\[output\] has unknown keys 'topk' \(did you mean 'top_k'\?\), 'colour'; "
                                       r"the keys allowed in \[output\] are: dir, top_k, labels, raw"),
    ("preprocess", "resize = 256", r"\[preprocess\] has unknown key 'resize'.*resize_shorter, crop, mean, std, "
                                   r"layout, dtype, channel_order"),
    ("model", "weights = 1", r"\[model\] has unknown key 'weights'; the keys allowed in \[model\] are: onnx, plan, "
                             r"precision, max_batch"),
    ("outputs", "dir = 1", r"unknown section 'outputs' \(did you mean 'output'\?\); the sections allowed are: "
                           r"model, data, preprocess, output, run"),
])
def test_unknown_keys_list_the_allowed_ones(tmp_path, section, body, message):
    with pytest.raises(JobError, match=message):
        load_job(job_with(tmp_path, section, body))


def test_model_and_data_sections(tmp_path):
    with pytest.raises(JobError, match=r"\[model\] is missing"):
        load_job(write_job(tmp_path, '[data]\nsource = "x"\n'))
    with pytest.raises(JobError, match=r"\[data\] is missing"):
        load_job(write_job(tmp_path, '[model]\nonnx = "model.onnx"\n'))
    with pytest.raises(JobError, match=r"\[data\] source is missing"):
        load_job(write_job(tmp_path, '[model]\nonnx = "model.onnx"\n[data]\nshard_rows = 8\n'))
    with pytest.raises(JobError, match=r"\[model\] needs exactly one of onnx"):
        load_job(write_job(tmp_path, '[model]\nprecision = "fp16"\n[data]\nsource = "x"\n'))
    with pytest.raises(JobError, match=r"\[model\] onnx: .*missing\.onnx does not exist"):
        load_job(write_job(tmp_path, '[model]\nonnx = "missing.onnx"\n[data]\nsource = "x"\n'))
    with pytest.raises(JobError, match=r"\[model\] precision applies when building from onnx"):
        load_job(write_job(tmp_path, '[model]\nplan = "model.plan"\nprecision = "fp16"\n[data]\nsource = "x"\n'))
    with pytest.raises(JobError, match=r"\[data\] source is an empty list"):
        load_job(write_job(tmp_path, '[model]\nplan = "model.plan"\n[data]\nsource = []\n'))
    with pytest.raises(JobError, match=r"\[run\] must be a table"):
        load_job(write_job(tmp_path, MINIMAL.replace("[model]", "run = 3\n[model]")))
    job = load_job(write_job(tmp_path, '[model]\nplan = "model.plan"\n[data]\nsource = "/abs/x.parquet"\n'))
    assert job.model.path == tmp_path / "model.plan" and job.data.source == "/abs/x.parquet"
    # check_files=False validates a spec whose files live elsewhere (the cluster it is sent to).
    job = load_job(write_job(tmp_path, '[model]\nonnx = "elsewhere.onnx"\n[output]\nlabels = "l.txt"\n'
                                       '[data]\nsource = "x"\n'), check_files=False)
    assert job.model.onnx == tmp_path / "elsewhere.onnx" and job.output.labels == tmp_path / "l.txt"


def test_unreadable_job_files(tmp_path):
    with pytest.raises(JobError, match=r"job file .*nope\.toml does not exist"):
        load_job(tmp_path / "nope.toml")
    with pytest.raises(JobError, match="is a directory"):
        load_job(tmp_path)
    with pytest.raises(JobError, match=r"bad\.toml is not valid TOML: .*line 2"):
        load_job(write_job(tmp_path, "[model]\nonnx = \n", "bad.toml"))
    with pytest.raises(JobError, match=r"\[output\] labels: labels file .*empty\.txt is empty"):
        (tmp_path / "empty.txt").write_text("\n")
        load_job(job_with(tmp_path, "output", 'labels = "empty.txt"'))


def test_parse_job_from_a_dict(tmp_path):
    job = parse_job({"model": {"plan": "m.plan"}, "data": {"source": "d"}}, base_dir=tmp_path, check_files=False)
    assert job.model.plan == tmp_path / "m.plan" and job.output.dir == tmp_path / "job-out"
    with pytest.raises(JobError, match=r"^\[run\] batch must be a positive integer, got 0$"):
        parse_job({"model": {"plan": "m.plan"}, "data": {"source": "d"}, "run": {"batch": 0}}, check_files=False)


@pytest.mark.parametrize("name", ["example.toml", "resnet50_fp16.toml"])
def test_shipped_job_specs_validate(name):
    job = load_job(REPO / "jobs" / name, check_files=False)
    assert job.output.dir.is_absolute() and Path(job.data.source).is_absolute()
    if name == "resnet50_fp16.toml":
        assert job.model.onnx is not None and job.model.precision == "fp16"
        assert (job.run.device, job.run.decode, job.preprocess.dtype) == ("cuda", "gpu", "float16")
        assert job.max_batch >= job.run.batch
    else:
        assert job.model.plan is not None and job.run.device == "cpu"
