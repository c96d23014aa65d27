"""The GPU benchmark scripts without a GPU: they exit with a clear message and write nothing; their
orchestration (job files, launcher commands, reports, scaling table, JSON record) runs on the CPU
with the GPU-only steps replaced; and slim_wheels.py rewrites a wheel consistently."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "device"))

import scaling_gpu  # noqa: E402
import scoring_gpu_e2e as e2e  # noqa: E402
import slim_wheels  # noqa: E402
from scoring.job import parse_job  # noqa: E402
from scoring.report import Metrics, write_report  # noqa: E402
from tests.scoring.test_run_local import CROP, tiny_plan  # noqa: E402


def _no_gpu_env() -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # hides the GPUs where there are some
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.parametrize("script", ["scoring_gpu_e2e.py", "scaling_gpu.py"])
def test_without_a_gpu_exits_with_a_message(tmp_path, script):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / script), str(out), "--rows", "10"], cwd=tmp_path,
                          env=_no_gpu_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == e2e.EXIT_NO_GPU, proc.stderr
    assert "needs a CUDA GPU" in proc.stderr and "nothing was written" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_gpu_vs_torch_without_a_gpu_exits_with_a_message(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_vs_torch.py"), str(out)], cwd=tmp_path,
                          env=_no_gpu_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == e2e.EXIT_NO_GPU, proc.stderr
    assert "needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("option", ["--decode-threads", "--decode-processes"])
def test_a_count_that_is_not_a_number_is_refused_before_any_work(tmp_path, option):
    proc = subprocess.run([sys.executable, str(BENCH / "scoring_gpu_e2e.py"), str(tmp_path / "out"), option, "many"],
                          capture_output=True, text=True, timeout=120, env=_no_gpu_env())
    assert proc.returncode == 2 and "expected \"auto\" or a whole number, got 'many'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    assert e2e._count_or_auto("auto") == "auto" and e2e._count_or_auto("3") == 3


@pytest.mark.parametrize("script", ["scoring_gpu_e2e.py", "scaling_gpu.py", "device/slim_wheels.py", "fp16_numerics.py",
                                    "gpu_vs_torch.py",
                                    "fp16_top1_peer.py", "fp16_top1_emulated.py", "fp16_top1_gpu.py", "fp16_sensitivity.py",
                                    "host_decode_prep.py", "device/green_context_probe.py",
                                    "device/nvjpeg_kernel_count.py"])
def test_help(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=120, env=_no_gpu_env())
    assert proc.returncode == 0 and "usage:" in proc.stdout


# -- helpers ----------------------------------------------------------------------------------------

def test_job_dict_is_a_valid_job_and_survives_toml(tmp_path):
    job = e2e.job_dict(str(tmp_path / "m.plan"), tmp_path / "data", tmp_path / "out", 256, "fp16", decode="gpu",
                       decode_threads=4, workers=2)
    text = scaling_gpu.to_toml(job)
    assert tomllib.loads(text) == json.loads(json.dumps(job))
    spec = parse_job(tomllib.loads(text), base_dir=tmp_path, check_files=False)
    assert (spec.run.decode, spec.run.device, spec.run.batch, spec.data.shard_rows) == ("gpu", "cuda", 256, 4096)
    assert spec.preprocess.dtype == "float16" and spec.preprocess.crop == 224


def test_dataset_layout():
    assert e2e.dataset_layout(100_000) == (12, 8)  # 12 files of ~8.3k rows, row groups of ~1042
    assert e2e.dataset_layout(5000) == (1, 5)
    assert e2e.dataset_layout(10) == (1, 1)


def test_prepare_data_reuses_a_matching_dataset(tmp_path, capsys):
    first = e2e.prepare_data(tmp_path / "a" / "data", 12)
    assert not first["reused"] and Path(first["dir"]) == tmp_path / "a" / "data"
    again = e2e.prepare_data(tmp_path / "b" / "data", 12, also_look_in=(tmp_path / "a" / "data",))
    assert again["reused"] and again["dir"] == first["dir"] and not (tmp_path / "b" / "data").exists()
    other = e2e.prepare_data(tmp_path / "a" / "data", 14)  # other rows: made again in place
    assert not other["reused"] and json.loads((tmp_path / "a" / "data.json").read_text())["rows"] == 14
    small = e2e.prepare_data(tmp_path / "a" / "data", 14, short_side=64)  # other sizes: made again
    assert not small["reused"] and small["short_side"] == 64


def test_heavier_images_are_a_dataset_of_their_own_and_old_markers_still_match(tmp_path):
    plain = e2e.prepare_data(tmp_path / "data", 6)
    marker = json.loads((tmp_path / "data.json").read_text())
    assert "noise" not in marker and "jpeg_quality" not in marker  # the defaults: as markers were before
    heavy = e2e.prepare_data(tmp_path / "data", 6, noise=5.0, jpeg_quality=(90, 98))  # not the plain one
    assert not heavy["reused"] and heavy["noise"] == 5.0 and heavy["jpeg_quality"] == [90, 98]
    assert heavy["bytes"] > 2 * plain["bytes"]
    assert e2e.prepare_data(tmp_path / "data", 6, noise=5.0, jpeg_quality=(90, 98))["reused"]
    assert not e2e.prepare_data(tmp_path / "data", 6)["reused"]


def test_pre_resized_images_have_the_asked_shorter_side(tmp_path):
    import pyarrow.parquet as pq
    from PIL import Image
    import io

    made = e2e.prepare_data(tmp_path / "data", 6, short_side=40)
    table = pq.read_table(made["paths"][0])
    sizes = [Image.open(io.BytesIO(row["bytes"])).size for row in table.column("image").to_pylist()]
    assert all(h == 40 and 40 <= w <= 53 for w, h in sizes), sizes


def test_mpi_and_ray_commands():
    env = {"PYTHONPATH": "/tmp/site:/repo", "LD_LIBRARY_PATH": "/x", "BATCHSCORE_NVIMGCODEC_BACKENDS": "hw",
           "OMP_NUM_THREADS": "1", "HOME": "/root"}
    mpi = scaling_gpu.run_command("mpi", 4, Path("job.toml"), env)
    assert mpi[1:6] == ["--allow-run-as-root", "-np", "4", "--bind-to", "none"]
    assert ["-x", "PYTHONPATH"] == mpi[mpi.index("PYTHONPATH") - 1: mpi.index("PYTHONPATH") + 1]
    assert "BATCHSCORE_NVIMGCODEC_BACKENDS" in mpi  # our settings reach every rank
    assert "OMP_NUM_THREADS" in mpi and "HOME" not in mpi  # and the thread-pool caps, nothing else
    assert mpi[mpi.index(sys.executable):] == [sys.executable, "-m", "launchers.cli", "run", "job.toml",
                                               "--launcher", "mpi", "--quiet"]
    with pytest.raises(SystemExit, match="BATCHSCORE_MPI_BIND must be none or cores, got 'core'"):
        scaling_gpu.run_command("mpi", 2, Path("job.toml"), env | {"BATCHSCORE_MPI_BIND": "core"})
    bound = scaling_gpu.run_command("mpi", 2, Path("job.toml"), env | {"BATCHSCORE_MPI_BIND": "cores"})
    if scaling_gpu.host_cores() >= 2:
        assert bound[3:8] == ["2", "--map-by", f"slot:PE={scaling_gpu.host_cores() // 2}", "--bind-to", "core"]
    ray = scaling_gpu.run_command("ray", 2, Path("job.toml"), env)
    assert ray[0] == sys.executable and ray[-4:] == ["ray", "--quiet", "--workers", "2"]


def test_child_env_keeps_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    parts = scaling_gpu.child_env()["PYTHONPATH"].split(os.pathsep)
    assert parts == [str(ROOT), "/tmp/site"]


def _fake_run(path: Path, workers: int, rate: float, launched: float) -> Path:
    metrics = []
    for k in range(workers):
        samples = [(1.0 + 0.5 * i, int(rate * 0.5 * (i + 1))) for i in range(20)]
        metrics.append(Metrics(worker=k, device=f"cuda:{k}", started_at=launched + 2.0 + k, images=samples[-1][1],
                               wall_s=11.0, startup_s=1.0, samples=samples))
    write_report(path, {"name": "fake", "started_at": launched, "wall_s": 14.0}, metrics)
    return path


def test_summaries_and_scaling_from_reports(tmp_path):
    runs = []
    for n in (1, 2, 4):
        run_dir = _fake_run(tmp_path / "mpi" / f"workers-{n}", n, 1000.0, launched=1000.0)
        runs.append(scaling_gpu.summarize_run(run_dir, n, command_started=998.5, command_s=15.0))
    runs.append({"workers": 8, "skipped": "this machine has 4 GPUs"})
    result = scaling_gpu.add_scaling(runs, tmp_path / "mpi")
    assert result["baseline_workers"] == 1 and Path(result["files"]["json"]).is_file()
    one, two, four = runs[:3]
    assert four["launch_to_first_batch_s"] == pytest.approx(2.0 + 3 + 1.0)  # the last worker's first batch
    assert four["launch_to_first_batch_worker"] == 3
    assert four["command_to_first_batch_s"] == pytest.approx(6.0 + 1.5)
    assert four["speedup"] == pytest.approx(4.0) and four["efficiency"] == pytest.approx(1.0)
    assert four["steady_images_per_s"] == pytest.approx(4 * 1000.0)
    assert four["steady_efficiency"] == pytest.approx(1.0)
    assert two["images_per_s_per_gpu"] == pytest.approx(one["images_per_s"])
    assert e2e.steady_images_per_s({"series": {"workers": {}}}) is None


def test_single_gpu_figure(tmp_path):
    (tmp_path / "scoring_gpu_e2e.json").write_text(json.dumps({
        "device": {"name": "NVIDIA H100"}, "rows": 10, "engine_only": {"images_per_s": 300.0},
        "end_to_end": {"decode": "gpu", "images_per_s": 200.0, "steady_images_per_s": 280.0,
                       "launch_to_first_batch_s": 3.0}}))
    got = scaling_gpu.single_gpu_figure(tmp_path / "scaling", None, {"name": "NVIDIA H200"})
    assert got["images_per_s"] == 200.0 and got["same_device"] is False
    assert scaling_gpu.single_gpu_figure(tmp_path / "nothing" / "here", None, {}) is None


# -- the scripts' whole flow on the CPU, the GPU-only steps replaced -------------------------------------

@pytest.fixture
def on_the_cpu(tmp_path, monkeypatch):
    """A tiny CPU plan for the zoo model, CPU jobs of 32x32 crops, and a GPU described but not used."""
    plan = tiny_plan(tmp_path / "tiny.plan")
    real_job_dict = e2e.job_dict

    def cpu_job(*args, **kwargs):
        job = real_job_dict(*args, **kwargs)
        job["run"].update(device="cpu", decode="cpu", decode_threads=1)
        job["preprocess"] = {"resize_shorter": 36, "crop": CROP}
        job["data"]["shard_rows"] = 8
        return job

    fake_gpu = {"kind": "cuda", "name": "test GPU", "arch": "sm_00", "count": 2}
    for module in (e2e, scaling_gpu):
        monkeypatch.setattr(module, "no_gpu_message", lambda script: None)
        monkeypatch.setattr(module, "job_dict", cpu_job)
        monkeypatch.setattr(module, "device_info", lambda: fake_gpu)
    monkeypatch.setattr(e2e, "prepare_plan", lambda *a, **k: {"path": str(plan), "reused": False, "build_s": 0.1})
    monkeypatch.setattr(e2e, "engine_only", lambda path, batch, it, warmup: {
        "batch": batch, "images_per_s": 1000.0, "watts": None, "images_per_s_per_watt": None})
    monkeypatch.setattr(scaling_gpu, "_build_plan_in_child", lambda *a: {"path": str(plan), "reused": False})
    monkeypatch.setattr(e2e, "dataset_layout", lambda rows: (2, 4))  # shards of 8 rows: enough for every worker
    return tmp_path


def test_e2e_flow_on_the_cpu(on_the_cpu, capsys):
    out = on_the_cpu / "e2e"
    assert e2e.main([str(out), "--rows", "24", "--batch", "8", "--cpu-rows", "16", "--decode", "cpu"]) == 0
    record = json.loads((out / "scoring_gpu_e2e.json").read_text())
    assert record["end_to_end"]["images"] == 24 and record["cpu_decode"]["images"] == 16
    assert record["ratio_end_to_end_over_engine"] == pytest.approx(record["end_to_end"]["images_per_s"] / 1000.0)
    assert record["end_to_end"]["launch_to_first_batch_s"] > 0 and record["end_to_end"]["stages"]
    assert record["cpu_decode"]["images_per_s_per_core"] > 0
    assert {"python", "numpy", "pyarrow", "cupy", "cudnn_frontend", "nvimgcodec"} <= set(record["versions"])
    assert record["host_cores"] >= 1 and record["command"]
    host = record["end_to_end"]["host_cpu"]  # this machine has /proc/stat: the job's CPU shares
    assert 0 <= host["steal"] < 1 and 0 < host["busy"] <= 1 and host["ticks"] > 0
    shown = capsys.readouterr().out
    assert "engine alone" in shown and "targets:" in shown and "CPU decode per core" in shown
    assert "stolen by the VM's hypervisor" in shown


def test_scaling_flow_on_the_cpu_with_mpi(on_the_cpu, capsys):
    if scaling_gpu.missing_launcher("mpi"):
        pytest.skip(scaling_gpu.missing_launcher("mpi"))
    out = on_the_cpu / "scaling"
    code = scaling_gpu.main([str(out), "--rows", "32", "--batch", "8", "--counts", "1,2,4", "--launchers", "mpi",
                             "--decode", "cpu", "--run-timeout", "120"])
    record = json.loads((out / "scaling_gpu.json").read_text())
    runs = record["launchers"]["mpi"]["runs"]
    assert code == 0, runs
    assert [r["workers"] for r in runs] == [1, 2, 4] and "skipped" in runs[2]
    assert runs[1]["reported_workers"] == 2 and runs[1]["images"] == 32 and runs[1]["efficiency"] is not None
    assert "warning" not in runs[1] and runs[0]["speedup"] == 1.0
    assert runs[1]["launch_to_first_batch_s"] > 0 and runs[1]["command_to_first_batch_s"] >= runs[1]["launch_to_first_batch_s"]
    assert (out / "mpi" / "scaling.json").is_file() and (out / "mpi" / "workers-2.toml").is_file()
    assert "mpi" in capsys.readouterr().out


# -- slim_wheels --------------------------------------------------------------------------------------

def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    dist = path.name.split("-")[0] + "-1.0.dist-info"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(
        [_record_line(n, d) for n, d in files.items()] + [[f"{dist}/RECORD", "", ""]])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o755 << 16
            z.writestr(info, data)
        z.writestr(f"{dist}/RECORD", text.getvalue())
    return path


def _check_record(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        record = next(n for n in names if n.endswith("/RECORD"))
        rows = {r[0]: r for r in csv.reader(io.StringIO(z.read(record).decode())) if r}
        assert set(rows) == set(names)
        for n in names:
            if n != record:
                assert rows[n] == _record_line(n, z.read(n)), n
        assert z.getinfo(names[0]).external_attr >> 16 == 0o755
    return names


def test_slim_wheels_combines_and_slims(tmp_path):
    gpu, ray, out = tmp_path / "gpu", tmp_path / "ray", tmp_path / "all"
    gpu.mkdir(), ray.mkdir()
    _wheel(gpu / "nvidia_nvimgcodec_cu13-1.0-py3-none-any.whl", {
        "nvidia/nvimgcodec/__init__.py": b"x",
        "nvidia/nvimgcodec/nvimgcodec_impl.cpython-312-x86_64-linux-gnu.so": b"312" * 100,
        "nvidia/nvimgcodec/nvimgcodec_impl.cpython-313t-x86_64-linux-gnu.so": b"313" * 100,
        "nvidia/nvimgcodec/nvimgcodec_impl.cpython-39-x86_64-linux-gnu.so": b"39" * 100,
        "nvidia/nvimgcodec/extensions/libnvjpeg_ext.so.0.9.0": b"j" * 100,
        "nvidia/nvimgcodec/extensions/libopencv_ext.so.0.9.0": b"o" * 100,
        "nvidia/nvimgcodec/extensions/libnvtiff_ext.so.0.9.0": b"t" * 100,
    })
    cudnn = {"cudnn/__init__.py": b"i", "cudnn/_pygraph.py": b"p", "cudnn/engines/base.py": b"e",
             "cudnn/sdpa/fwd/k.py": b"s", "cudnn/gemm/x.py": b"g", "cudnn/rope/r.py": b"r",
             "cudnn/ops/o.py": b"o", "include/cudnn_frontend.h": b"h"}
    for folder in (gpu, ray):
        _wheel(folder / "nvidia_cudnn_frontend-1.0-cp312-cp312-any.whl", cudnn)
        (folder / "peer_torch.py").write_text("peer")
    _wheel(ray / "ray-1.0-cp312-cp312-any.whl", {"ray/__init__.py": b"r", "ray/data/__init__.py": b"d",
                                                  "ray/data/read_api.py": b"d" * 100})
    (ray / "peer_raydata.py").write_text("raydata")
    os.chmod(ray / "peer_raydata.py", 0o444)

    sizes = slim_wheels.combine(gpu, ray, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(sizes) == sorted(
        ["nvidia_nvimgcodec_cu13-1.0-py3-none-any.whl", "nvidia_cudnn_frontend-1.0-cp312-cp312-any.whl",
         "ray-1.0-cp312-cp312-any.whl", "peer_torch.py", "peer_raydata.py"])
    codec = _check_record(out / "nvidia_nvimgcodec_cu13-1.0-py3-none-any.whl")
    assert [n for n in codec if ".so" in n] == ["nvidia/nvimgcodec/nvimgcodec_impl.cpython-312-x86_64-linux-gnu.so",
                                                "nvidia/nvimgcodec/extensions/libnvjpeg_ext.so.0.9.0"]
    kept = _check_record(out / "nvidia_cudnn_frontend-1.0-cp312-cp312-any.whl")
    assert [n for n in kept if not n.endswith("RECORD")] == ["cudnn/__init__.py", "cudnn/_pygraph.py",
                                                              "cudnn/engines/base.py", "cudnn/ops/o.py"]
    assert _check_record(out / "ray-1.0-cp312-cp312-any.whl") == ["ray/__init__.py", "ray-1.0.dist-info/RECORD"]
    slim_wheels.combine(gpu, ray, out)  # again over its own output (the read-only peer copy included)

    with pytest.raises(slim_wheels.SlimError, match="over the 0.0001 MiB limit"):
        slim_wheels.combine(gpu, ray, out, limit_mib=0.0001)
    with pytest.raises(slim_wheels.SlimError, match="fetch-wheels.sh ray"):
        slim_wheels.combine(gpu, tmp_path / "missing", out)


def test_the_default_limit_leaves_room_for_the_repositorys_tracked_files(tmp_path, monkeypatch):
    """The device carries 64 MiB in all: tracked files plus the wheels (the results committed by
    session 15 made a 54.7 MB folder of wheels too big)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "results.bin").write_bytes(b"r" * 3 * 2**20)
    (repo / "untracked.bin").write_bytes(b"u" * 2**20)  # not carried, so not counted
    subprocess.run(["git", "-C", str(repo), "add", "results.bin"], check=True)
    assert slim_wheels.default_limit_mib(repo / ".whl_all") == 64 - 3 - slim_wheels.MARGIN_MIB
    (repo / ".whl_all").mkdir()  # the folder exists (a second run): the whole checkout still counts
    assert slim_wheels.default_limit_mib(repo / ".whl_all") == 64 - 3 - slim_wheels.MARGIN_MIB
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git looks no higher for a checkout
    assert slim_wheels.default_limit_mib(outside / "all") == slim_wheels.LIMIT_MIB


def test_ray_programs_get_their_executable_bit_back(tmp_path):
    src, dst = tmp_path / "ray-1-py3-none-any.whl", tmp_path / "out.whl"
    with zipfile.ZipFile(src, "w") as z:
        for name, data in (("ray/core/src/ray/gcs/gcs_server", b"\x7fELF program"), ("ray/_raylet.so", b"\x7fELF lib"),
                           ("ray/__init__.py", b"# python")):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            z.writestr(info, data)
    assert slim_wheels.restore_exec_bits(src, dst) == 1
    with zipfile.ZipFile(dst) as z:
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
        assert z.read("ray/__init__.py") == b"# python"
    assert modes == {"ray/core/src/ray/gcs/gcs_server": 0o755, "ray/_raylet.so": 0o644, "ray/__init__.py": 0o644}


@pytest.mark.parametrize("name", ["scaling_call.sh", "power_clock_call.sh"])
def test_the_device_calls_parse_and_refuse_to_run_outside_the_device_tool(tmp_path, name):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "device" / name
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    result = subprocess.run(["bash", str(script), "1,2"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode != 0 and "run this through the device tool" in result.stderr


def test_the_power_log_summary_takes_each_runs_last_busy_stretch_after_it_settles(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "device"))
    from power_clock_summary import main

    def line(t, watts, mhz, util, reason="0x4"):
        return f"2026/11/22 08:00:{t:06.3f}, {watts} W, {mhz} MHz, 2619 MHz, 40, {util} %, {reason}"

    rows = [line(0.0, 80, 345, 0),
            line(1.0, 300, 1900, 100), line(2.0, 690, 1800, 100), line(2.6, 688, 1760, 100),  # bench
            line(3.0, 120, 1980, 0),
            line(4.0, 400, 1980, 100), line(4.2, 120, 1980, 0),             # e2e's own short timing
            line(5.0, 350, 1965, 90), line(6.0, 600, 1965, 60, "0x0"), line(6.6, 640, 1950, 95),
            line(7.0, 130, 1980, 0)]
    (tmp_path / "smi.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "marks.txt").write_text("bench_start 2026/11/22 08:00:00.500\nbench_end 2026/11/22 08:00:02.800\n"
                                        "e2e_end 2026/11/22 08:00:08.000\n")
    (tmp_path / "bench.json").write_text(json.dumps({"rows": [{"images_per_s": 31000.0, "watts": 689.0,
                                                               "images_per_s_per_w": 45.0}]}))
    stages = {"compute": {"seconds": 3.5}}
    (tmp_path / "scoring_gpu_e2e.json").write_text(json.dumps({
        "date": "2026-11-22T08:00:09", "device": {"name": "GPU"}, "engine_only": {"images_per_s": 32000.0},
        "end_to_end": {"steady_images_per_s": 26000.0, "busy_fraction": 0.94, "stages": stages}}))
    assert main([str(tmp_path)]) == 0
    out = json.loads((tmp_path / "power_clocks.json").read_text())
    bench, scoring = out["engine_only_bench"]["nvidia_smi"], out["end_to_end"]["nvidia_smi"]
    assert bench["watts"] == [688.0, 690.0] and bench["sm_mhz"] == [1760, 1800]  # the first second left out
    assert scoring["watts"] == [600.0, 640.0] and scoring["sm_mhz"] == [1950, 1965]
    assert scoring["throttle_reasons"] == ["0x0", "0x4"] and len(out["samples"]) == len(rows)


def test_zoo_conditioning_measures_the_residual_gamma_and_active_shift_effects(tmp_path):
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"models": [{"model": "resnet18", "fp16_vs_numpy": {"rel_l2": 1.4e-3}}]}))
    proc = subprocess.run([sys.executable, str(BENCH / "zoo_conditioning.py"), str(tmp_path / "out"),
                           "--models", "resnet18", "--gpu", str(gpu)], capture_output=True, text=True,
                          timeout=300, env=_no_gpu_env())
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "out" / "zoo_conditioning.json").read_text())["models"]
    now, centred, old = rows  # the zoo as it is, then beta centred on 0, then also gamma ~ 1
    assert (centred["active_shift"], old["residual_gamma"]) == (0.0, 1.0)
    assert now["amplification"] < centred["amplification"] < old["amplification"]
    assert 1e-4 < now["fp16_output_error"] < 1e-2 and now["estimate_over_gpu"] == pytest.approx(
        now["fp16_output_error"] / 1.4e-3)
    assert "gpu_fp16_output_error" not in old and "gpu_fp16_output_error" not in centred  # for the zoo as it is


def test_outputs_io_measures_the_writer_and_the_reader(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / "outputs_io.py"), str(out), "--rows", "300", "--classes", "50"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_no_gpu_env())
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "outputs_io.json").read_text())
    assert record["benchmark"] == "outputs_io" and record["command"] and record["machine"]["pyarrow"]
    assert record["parameters"] == {"rows": 300, "classes": 50, "top_k": 5, "batch_rows": 256, "shard_rows": 4096,
                                    "repeats": 3, "seed": 0}
    top_k, raw = record["writer"]["top_k"], record["writer"]["top_k_raw"]
    assert top_k["rows_per_s"] > 0 and raw["rows_per_s"] > 0
    assert raw["bytes"] > 300 * 50 * 4 > top_k["bytes"] > 0  # the raw column holds every score
    half, converted = record["writer"]["top_k_float16"], record["writer"]["top_k_float16_as_float32"]
    assert half["scores"] == "float16" and converted["converted_to_float32_per_batch"] and half["rows_per_s"] > 0
    assert half["bytes"] == converted["bytes"] > 0  # the same part files, however the scores were handed over
    assert sorted(record["result_step_ms"]) == ["float16_copy", "float32_conversion"]
    assert all(ms > 0 for ms in record["result_step_ms"].values())
    reader = record["reader"]
    assert reader["rows_per_s"] > 0 and reader["mb_per_s"] > 0 and reader["image_bytes"] > 0
    assert (out / "data.json").is_file() and "reader (JPEG bytes)" in proc.stdout
    threads = record["reader_thread"]
    assert sorted(threads) == ["not_resized", "resized"]
    for figures in threads.values():  # one shard of 300 rows: two batches, nothing to straddle
        assert figures["batches"] == 2 and figures["batches_of_several_chunks"] == 0
        assert figures["rows_per_s"] > 0 and figures["read_cpu_us_per_row"] > 0 and len(figures["seconds"]) == 3
    assert "reader thread, resized" in proc.stdout


def test_fp16_top1_emulated_measures_agreement_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "fp16_top1_emulated.py"), str(tmp_path / "out"),
                           "--models", "resnet18", "--images", "32", "--batch", "16"], capture_output=True, text=True,
                          timeout=300, env=_no_gpu_env())
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads((tmp_path / "out" / "fp16_top1_emulated.json").read_text())["models"]
    assert row["model"] == "resnet18" and row["images"] == 32
    assert 0.9 <= row["top1_agree"] <= 1.0 and 1e-4 < row["rel_l2_median"] <= row["rel_l2_max"] < 1e-2
    assert 0 < row["top2_gap_over_norm_median"] < 1


def test_fp16_top1_emulated_runs_the_layers_each_bound_puts_in_fp32(tmp_path):
    """--fp16-layer-bound: a row per bound on the same images; the FP32 layers are those the build's
    choose_precisions picks (a concat's writers widen together), and carry a share of the MACs."""
    import copy

    import engine
    import fp16_top1_emulated as script
    from engine import zoo
    from engine.builder import BuildConfig
    from engine.precision import choose_precisions, fp16_layer_errors, fp32_layer_set
    from engine.probe import synthetic_feeds

    proc = subprocess.run([sys.executable, str(BENCH / "fp16_top1_emulated.py"), str(tmp_path / "out"),
                           "--models", "googlenet", "--images", "16", "--batch", "16",
                           "--fp16-layer-bound", "1e-2,1e-3"], capture_output=True, text=True, timeout=300,
                          env=_no_gpu_env())
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "out" / "fp16_top1_emulated.json").read_text())
    loose, tight = record["models"]
    assert record["fp16_layer_bounds"] == [1e-2, 1e-3]
    assert (loose["fp16_layer_bound"], tight["fp16_layer_bound"]) == (1e-2, 1e-3)
    assert loose["fp32_layers"] == {} and loose["fp32_mac_fraction"] == 0.0  # googlenet's worst layer errs ~1e-3
    assert tight["fp32_layer_count"] > tight["fp32_layers_above_bound"] >= 1  # concat groups widen together
    assert 0 < tight["fp32_mac_fraction"] < 1 and tight["macs_per_image"] == loose["macs_per_image"]
    assert loose["top2_gap_over_norm_median"] == tight["top2_gap_over_norm_median"]  # the same images
    assert tight["rel_l2_median"] < loose["rel_l2_median"]

    plan = engine.build(zoo.get("googlenet", image_size=script.SIZES["googlenet"]), BuildConfig(max_batch=1))
    errors = fp16_layer_errors(plan, synthetic_feeds(plan.inputs, 1))
    chosen = choose_precisions(copy.deepcopy(plan), synthetic_feeds(plan.inputs, 1), 1e-3)
    assert fp32_layer_set(plan.layers, errors, 1e-3) == chosen
    assert set(chosen) == set(tight["fp32_layers"])
    assert sum(script.layer_macs(plan).values()) == tight["macs_per_image"]
    bad = subprocess.run([sys.executable, str(BENCH / "fp16_top1_emulated.py"), str(tmp_path / "bad"),
                          "--fp16-layer-bound", "1e-3,0"], capture_output=True, text=True, timeout=120,
                         env=_no_gpu_env())
    assert bad.returncode == 2 and "--fp16-layer-bound" in bad.stderr and not (tmp_path / "bad").exists()


def test_fp16_top1_emulated_takes_an_image_size_for_every_model(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "fp16_top1_emulated.py"), str(tmp_path / "out"),
                           "--models", "resnet18", "--images", "4", "--batch", "4", "--image-size", "48"],
                          capture_output=True, text=True, timeout=300, env=_no_gpu_env())
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads((tmp_path / "out" / "fp16_top1_emulated.json").read_text())["models"]
    assert row["image_size"] == 48 and row["images"] == 4
    bad = subprocess.run([sys.executable, str(BENCH / "fp16_top1_emulated.py"), str(tmp_path / "bad"),
                          "--image-size", "0"], capture_output=True, text=True, timeout=120, env=_no_gpu_env())
    assert bad.returncode == 2 and "--image-size" in bad.stderr and not (tmp_path / "bad").exists()


def test_fp16_top1_gpu_wilson_interval_and_native_sizes():
    import fp16_top1_gpu as script

    low, high = script.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = script.wilson_interval(990, 1000)
    assert low == pytest.approx(0.9817, abs=1e-4) and high == pytest.approx(0.9946, abs=1e-4)
    assert script.wilson_interval(16384, 16384)[1] == 1.0 and script.wilson_interval(16384, 16384)[0] > 0.9997
    with pytest.raises(ValueError, match="trials must be positive"):
        script.wilson_interval(0, 0)
    assert (script.native_size("googlenet"), script.native_size("inception_v3")) == (224, 299)
    assert script.native_size("light_squeezenet") == 224
    names = script.light_names(["resnet50", "light"])
    assert names[0] == "resnet50" and len(names) == 10 and "light_inception_v1" in names


def test_fp16_top1_gpu_agreement_counts_flipped_top1_on_the_same_images():
    """The tally on the CPU: a candidate equal to the reference agrees on every image; one that flips
    the top-1 class of each batch's first image agrees on all but those; both see the same images."""
    import engine
    import fp16_top1_gpu as script
    from engine import zoo
    from engine.builder import BuildConfig

    context = engine.Engine(engine.build(zoo.get("resnet18", image_size=32), BuildConfig(max_batch=4))).create_context()
    seen = []

    def reference(x):
        seen.append(x.copy())
        return context.run({"input": x})["logits"]

    def flip_first(x):
        logits = context.run({"input": x})["logits"].copy()
        logits[0, logits[0].argmin()] = logits[0].max() + 1.0
        return logits

    result = script.agreement(reference, {"same": lambda x: context.run({"input": x})["logits"], "flip": flip_first},
                              images=12, batch=4, size=32)
    assert result["images"] == 12 and len(seen) == 3
    assert result["candidates"]["same"]["top1_agree"] == 1.0 and result["candidates"]["same"]["rel_l2_max"] == 0.0
    flipped = result["candidates"]["flip"]
    assert flipped["top1_agree"] == pytest.approx(9 / 12) and flipped["rel_l2_median"] > 0
    assert flipped["top1_agree_95"][0] < 9 / 12 < flipped["top1_agree_95"][1]
    assert 0 < result["top2_gap_over_norm_median"] < 1
    again = script.agreement(lambda x: seen.append(x.copy()) or context.run({"input": x})["logits"], {}, 12, 4, 32)
    assert again["candidates"] == {} and all(np.array_equal(a, b) for a, b in zip(seen[:3], seen[3:]))
    with pytest.raises(ValueError, match="shape"):
        script.agreement(reference, {"short": lambda x: np.zeros((4, 3))}, 4, 4, 32)


def test_fp16_numerics_top1_is_fp16_top1_gpus_tally():
    """fp16_numerics.top1_agreement runs fp16_top1_gpu.agreement on its two engines: FP32 as the reference."""
    import engine
    import fp16_numerics
    from engine import zoo
    from engine.builder import BuildConfig

    plan = engine.build(zoo.get("resnet18", image_size=32), BuildConfig(max_batch=4))

    class Flipped(engine.Engine):  # an "FP16" engine whose first image per batch changes class
        def create_context(self):
            context = super().create_context()
            run = context.run

            def flipped(feeds):
                out = dict(run(feeds))
                out["logits"] = out["logits"].copy()
                out["logits"][0, out["logits"][0].argmin()] = out["logits"][0].max() + 1.0
                return out
            context.run = flipped
            return context

    result = fp16_numerics.top1_agreement({"fp32": engine.Engine(plan), "fp16": Flipped(plan)}, 32, 4, 8)
    assert result["inputs"] == 8 and result["top1_agree"] == pytest.approx(6 / 8)
    assert result["top1_agree_95"][0] < 6 / 8 < result["top1_agree_95"][1] and result["rel_l2_max"] > 0


def test_fp16_top1_gpu_without_a_gpu_or_with_bad_options_writes_nothing(tmp_path):
    run = lambda *extra: subprocess.run([sys.executable, str(BENCH / "fp16_top1_gpu.py"), str(tmp_path / "out"),  # noqa: E731
                                         *extra], capture_output=True, text=True, timeout=120, env=_no_gpu_env())
    proc = run("--models", "googlenet")
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("--models", "lenet")
    assert proc.returncode == 2 and "no model named ['lenet']" in proc.stderr
    proc = run("--images", "0")
    assert proc.returncode == 2 and "must be positive" in proc.stderr
    proc = run("--models", "light_nonesuch")
    assert proc.returncode == 2 and "no model named ['light_nonesuch']" in proc.stderr
    proc = run("--models", "light,googlenet")  # known names: only the GPU is missing
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_weak_scaling_repeats_the_dataset_with_links_and_distinct_shards(tmp_path):
    from scoring.dataset import open_dataset
    from scoring.make_data import make_dataset

    made = make_dataset(tmp_path / "data", 40, row_groups=2, files=2, image_size=(24, 20), workers=1)
    assert scaling_gpu.repeated_dataset(tmp_path / "data", 1, tmp_path / "data-x1") == tmp_path / "data"
    where = scaling_gpu.repeated_dataset(tmp_path / "data", 3, tmp_path / "data-x3")
    links = sorted(where.iterdir())
    assert len(links) == 3 * len(made.files) and all(link.is_symlink() for link in links)
    tripled = open_dataset(where)
    shards = tripled.shards(10)
    assert sum(s.num_rows for s in shards) == 3 * 40
    assert len({s.key for s in shards}) == len(shards)  # each copy's rows are shards of their own
    again = scaling_gpu.repeated_dataset(tmp_path / "data", 2, tmp_path / "data-x3")  # made afresh
    assert len(list(again.iterdir())) == 2 * len(made.files)


def test_fp16_sensitivity_ranks_layers_by_their_effect_on_the_logits(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "fp16_sensitivity.py"), str(tmp_path / "out"),
                           "--models", "resnet18", "--images", "16", "--batch", "16", "--calib-images", "16",
                           "--sets", "fp16,classifier", "--mac-targets", "0.5", "--grouped-targets", "0.5"],
                          capture_output=True, text=True, timeout=600, env=_no_gpu_env())
    assert proc.returncode == 0, proc.stderr
    (model,) = json.loads((tmp_path / "out" / "fp16_sensitivity.json").read_text())["models"]
    calibration = model["calibration"]
    assert 0 < calibration["none_fp16"] < calibration["all_fp16"] < 1e-2  # FP32 layers shrink the error
    rows = {row["set"]: row for row in model["rows"]}
    assert {"fp16", "classifier", "macs<=0.5"} <= set(rows)  # build<=0.5: the same set (no concat), kept once
    assert rows["fp16"]["fp32_layer_count"] == 0 and rows["fp16"]["fp32_mac_fraction"] == 0.0
    assert rows["classifier"]["fp32_layer_count"] >= 1
    half = rows["macs<=0.5"]
    assert 0 < half["fp32_mac_fraction"] <= 0.5 and half["rel_l2_median"] < rows["fp16"]["rel_l2_median"]
    assert all(0.0 <= row["top1_agree"] <= 1.0 and row["images"] == 16 for row in rows.values())


def test_manifest_records_times_concurrent_recorders_and_checks_every_part_is_recorded(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / "manifest_records.py"), str(out), "--workers", "1,3",
                           "--shards", "30", "--repeats", "1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=_no_gpu_env())
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "manifest_records.json").read_text())
    assert record["benchmark"] == "manifest_records" and record["command"] and record["code"]["revision"]
    assert [f["workers"] for f in record["figures"]] == [1, 3] and [f["parts"] for f in record["figures"]] == [30, 30]
    for figure in record["figures"]:
        assert 0 <= figure["mean_worker_inside_record_s"] <= figure["max_worker_inside_record_s"] < figure["wall_s"]
    assert not (out / "work").exists()  # the recording directory is removed


FAKE_PYTHON = r'''#!/usr/bin/env bash
# Stands in for the device's python3: "-m pip" succeeds; scaling_gpu.py notes its environment and
# arguments and writes the files a real set leaves (scaling_gpu.json, one report per launcher).
if [ "$1" = "-m" ]; then exit 0; fi
out="$2"
mkdir -p "$out/mpi/workers-1"
printf '{"set": "%s", "ahead": "%s", "omp": "%s", "args": "%s"}\n' "$(basename "$out")" \
    "${BATCHSCORE_MPI_SHARDS_AHEAD:-}" "${OMP_NUM_THREADS:-}" "$*" > "$out/scaling_gpu.json"
echo '{"workers": []}' > "$out/mpi/workers-1/report.json"
mkdir -p "$out/data" "$out/plan"; echo '{}' > "$out/data.json"
echo "set $(basename "$out") done"
'''


def test_the_scaling_call_cycles_each_sets_environment_and_returns_one_archive(tmp_path):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "device" / "scaling_call.sh"
    bin_dir, work, out, repo = tmp_path / "bin", tmp_path / "work", tmp_path / "out", tmp_path / "repo"
    for d in (bin_dir, work, out, repo / "benchmarks"):
        d.mkdir(parents=True)
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("BATCHSCORE_MPI_SHARDS_AHEAD", "OMP_NUM_THREADS")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", OUT=str(out), SCALING_WORK=str(work),
               SETS_ENV="BATCHSCORE_MPI_SHARDS_AHEAD=0 OMP_NUM_THREADS=1")
    started = time.monotonic()
    result = subprocess.run(["bash", str(script), "1,4", "1000", "120", "--weak", "3"], capture_output=True,
                            text=True, env=env, cwd=repo, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30  # the early copy was stopped, not waited for
    assert [line for line in result.stdout.splitlines() if line.startswith("=== set")] == [
        "=== set r1: BATCHSCORE_MPI_SHARDS_AHEAD=0", "=== set r2: OMP_NUM_THREADS=1",
        "=== set r3: BATCHSCORE_MPI_SHARDS_AHEAD=0"]
    assert sorted(p.name for p in out.iterdir()) == ["scale.tgz"]  # one file: the device returns at most 8
    import tarfile

    with tarfile.open(out / "scale.tgz") as archive:
        names = set(archive.getnames())
        sets = {n: json.load(archive.extractfile(f"./{n}-scaling_gpu.json")) for n in ("r1", "r2", "r3")}
    assert {"./r1/mpi/workers-1-report.json", "./r3/mpi/workers-1-report.json"} <= names
    assert [(s["ahead"], s["omp"]) for s in sets.values()] == [("0", ""), ("", "1"), ("0", "")]
    assert all("--counts 1,4" in s["args"] and "--weak" in s["args"] for s in sets.values())
    assert (work / "scale" / "data").is_symlink()  # later sets reuse the first set's data


def test_the_batched_nvjpeg_probe_lays_yuv_planes_out_one_after_another(monkeypatch):
    import nvjpeg_batched_probe as probe

    # a 4:2:0 image of 101 x 75: chroma planes of 51 x 38
    assert probe.yuv_planes(1000, [(101, 75), (51, 38), (51, 38)]) == [
        (1000, 101), (1000 + 101 * 75, 51), (1000 + 101 * 75 + 51 * 38, 51)]
    monkeypatch.setattr(sys, "argv", ["probe", "x.plan", "data", "hardware", "1", "rgbi,bgr"])
    with pytest.raises(SystemExit, match=r"unknown output format\(s\) \['bgr'\]"):
        probe.main()


@pytest.mark.parametrize("name", ["cold_tuning_repeat.py", "batch1_probe.py"])
def test_the_device_probes_print_their_usage_when_called_wrongly(name):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "device" / name
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_no_gpu_env(), timeout=60)
    assert proc.returncode == 1 and "on the GPU machine" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_vs_torch_ratios_cover_what_was_measured_and_the_record_is_written_before_the_peers(tmp_path):
    """A call cut while torch.compile ran (session 15) lost the engine's figures: the record is now
    written after each stage, with the ratios of the peers measured so far."""
    import gpu_vs_torch

    ours = [{"model": "resnet50", "precision": "fp16", "batch": 256, "images_per_s": 30000.0},
            {"model": "resnet50", "precision": "fp32", "batch": 256, "images_per_s": 4000.0}]
    record = {"benchmark": "gpu_vs_torch", "batchscore": ours}
    gpu_vs_torch.write_record(tmp_path, record)
    assert json.loads((tmp_path / "gpu_vs_torch.json").read_text())["batchscore"] == ours
    assert "ratios" not in json.loads((tmp_path / "gpu_vs_torch.json").read_text())

    record["peer"] = {"peer_torch": [
        {"model": "resnet50", "mode": "eager", "dtype": "float16", "bs": 256, "ips": 15000.0},
        {"model": "resnet50", "mode": "eager", "dtype": "float16", "bs": 1, "ips": 100.0},  # no row of ours
        {"model": "resnet50", "mode": "eager", "dtype": "float32", "bs": 256, "ips": 8000.0}]}
    gpu_vs_torch.write_record(tmp_path, record)
    written = json.loads((tmp_path / "gpu_vs_torch.json").read_text())["ratios"]
    assert [(r["precision"], r["peer_mode"], r["ratio"]) for r in written] == [("fp16", "eager", 2.0),
                                                                              ("fp32", "eager", 0.5)]

    record["peer"]["peer_torch_compile"] = [
        {"model": "resnet50", "mode": "compile-default", "dtype": "float16", "bs": 256, "ips": 24000.0}]
    record["peer"]["peer_fp32_no_tf32"] = {"rows": [{"ips": 3000.0}, {"ips": 3200.0}]}
    gpu_vs_torch.write_record(tmp_path, record)
    written = json.loads((tmp_path / "gpu_vs_torch.json").read_text())["ratios"]
    assert ("compile-default", 1.25) in [(r["peer_mode"], r["ratio"]) for r in written]
    assert [r["ratio"] for r in written if r["peer_mode"] == gpu_vs_torch.FP32_PEER_MODE] == [1.25]


def test_outputs_io_reads_heavier_files_from_a_dataset_of_their_own(tmp_path):
    sys.path.insert(0, str(BENCH))
    import outputs_io

    light = outputs_io.time_reader(tmp_path, 12)
    heavy = outputs_io.time_reader(tmp_path, 12, noise=5.0, jpeg_quality=(90, 98))
    assert Path(light["data_dir"]).name == "data" and Path(heavy["data_dir"]).name == "data-detailed"
    assert heavy["image_bytes"] > 2 * light["image_bytes"] and heavy["rows_per_s"] > 0
