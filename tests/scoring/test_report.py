"""scoring/report.py: the numbers in report.json, the Markdown, the plots, render(), the progress
line, the NVML sampler (without a GPU) and the scaling table."""

import io
import json
import struct
import sys
import time
import types
import zlib

import numpy as np
import pytest

from scoring import report
from scoring.report import (Metrics, Progress, ReportError, build_report, combine_scaling,
                            nvml_power_sampler, render, render_markdown, throughput_curves, write_report)

T0 = 1_700_000_000.0


def _worker(k, rate, *, start=0.0, startup=1.0, wall=10.0, errors=0, stages=None, **extra):
    """A worker that ran at `rate` images/s from `startup` to `wall` seconds after `start`."""
    times = np.arange(startup, wall + 1e-9, 0.5)
    samples = [(float(t), int(round(rate * (t - startup + 0.5)))) for t in times]
    m = Metrics(worker=k, device=f"cuda:{k}", host="node0", started_at=T0 + start,
                images=samples[-1][1], errors=errors, wall_s=wall, startup_s=startup,
                stages=stages or {}, samples=samples, **extra)
    return m


@pytest.fixture
def metrics():
    return [
        _worker(0, 100, wall=10.0, errors=2, busy_fraction=0.9,
                stages={"read": 1.0, "decode": 6.0, "compute": 4.0},
                watts=[(0.0, 300.0), (5.0, 320.0)], batch_latency_s=[0.1] * 9 + [0.5]),
        _worker(1, 100, start=1.0, wall=9.0, startup=2.0, busy_fraction=0.6,
                stages={"read": 1.0, "decode": 5.0, "compute": 3.0, "input": 0.2, "h2d": 0.5},
                watts=[(0.0, 200.0)], energy_j=2500.0, energy_s=10.0),
        _worker(2, 60, wall=10.0, startup=1.5, gpu_util=[(0.0, 40.0), (1.0, 60.0)]),
    ]


def _is_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    assert data[-8:-4] == b"IEND"
    return width, height


# -- numbers ----------------------------------------------------------------------------------

def test_summary_numbers(metrics):
    data = build_report({"name": "t"}, metrics)
    s = data["summary"]
    images = [m.images for m in metrics]
    assert s["workers"] == 3
    assert s["images"] == sum(images)
    assert s["errors"] == 2
    assert s["error_fraction"] == pytest.approx(2 / sum(images))
    assert s["wall_s"] == pytest.approx(10.0)  # worker 1: starts at +1, ends at +10
    assert s["images_per_s"] == pytest.approx(sum(images) / 10.0)
    assert s["images_per_s_per_worker"] == pytest.approx(sum(images) / 30.0)
    # busy: measured for 0 and 1, NVML utilisation (mean 50%) for 2, weighted by wall time
    assert s["busy_fraction"] == pytest.approx((0.9 * 10 + 0.6 * 9 + 0.5 * 10) / 29)
    # watts: mean of samples for 0, energy counter for 1 (not its sample), none for 2
    w = {d["worker"]: d for d in data["workers"]}
    assert w[0]["avg_watts"] == pytest.approx(310.0)
    assert w[1]["avg_watts"] == pytest.approx(250.0)
    assert w[2]["avg_watts"] is None
    assert s["avg_watts"] == pytest.approx(560.0) and s["powered_workers"] == 2
    ips = {k: images[k] / metrics[k].wall_s for k in range(3)}
    assert s["images_per_s_per_watt"] == pytest.approx((ips[0] + ips[1]) / 560.0)
    assert w[0]["images_per_s_per_watt"] == pytest.approx(ips[0] / 310.0)
    assert s["startup_s"] == {"min": 1.0, "median": 1.5, "max": 2.0}
    assert s["latency"]["p50_s"] == pytest.approx(0.1) and s["latency"]["batches"] == 10
    assert w[0]["latency"]["p99_s"] == pytest.approx(np.percentile([0.1] * 9 + [0.5], 99))
    assert w[1]["latency"] is None
    assert w[2]["busy_source"] == "nvml" and w[0]["busy_source"] == "measured"


def test_per_worker_rates_and_stragglers(metrics):
    data = build_report({}, metrics)
    rates = [m.images / m.wall_s for m in metrics]
    for w, r in zip(data["workers"], rates):
        assert w["images_per_s"] == pytest.approx(r)
    median = float(np.median(rates))
    assert data["summary"]["median_worker_images_per_s"] == pytest.approx(median)
    assert data["summary"]["stragglers"] == [2]  # 60 images/s once running, against 100
    assert [w["straggler"] for w in data["workers"]] == [False, False, True]
    assert [w["steady_images_per_s"] for w in data["workers"]] == pytest.approx([100, 100, 60])
    assert data["workers"][2]["below_median"] == pytest.approx(0.4)


def test_a_worker_that_starts_late_is_not_a_straggler():
    # all run at 100 images/s; worker 2 starts 4 s late, so it scores far fewer images in the job
    late = [_worker(0, 100), _worker(1, 100), _worker(2, 100, startup=5.0)]
    data = build_report({}, late)
    assert data["workers"][2]["images_per_s"] < 0.7 * data["workers"][0]["images_per_s"]
    assert data["summary"]["stragglers"] == []


def test_a_straggler_names_the_thread_that_got_dear():
    def threads(images, **us_per_image):  # CPU seconds per thread from µs per image
        return {name: images * us * 1e-6 for name, us in us_per_image.items()}

    # 950 images each for the fast ones (100/s over 9.5 s); 570 for the straggler (60/s).
    fast = [_worker(k, 100, thread_cpu_s=threads(950, main=8, read=12, **{"decode-0": 40})) for k in range(3)]
    slow = _worker(3, 60, thread_cpu_s=threads(570, main=8, read=36, **{"decode-0": 44}))
    data = build_report({}, fast + [slow])
    assert data["summary"]["stragglers"] == [3]
    w = data["workers"][3]
    assert w["thread_cpu_us_per_image"]["read"] == pytest.approx(36)
    assert w["dear_thread"]["thread"] == "read"  # 3x the others'; decode-0 only 1.1x
    assert w["dear_thread"]["others_us_per_image"] == pytest.approx(12)
    assert "its read thread used 36 µs of CPU per image, the others' 12" in render_markdown(data)
    # nothing stands out, or nothing was measured: no thread is named
    even = _worker(3, 60, thread_cpu_s=threads(570, main=8, read=13, **{"decode-0": 41}))
    assert build_report({}, fast + [even])["workers"][3]["dear_thread"] is None
    bare = build_report({}, [_worker(k, 100) for k in range(3)] + [_worker(3, 60)])
    assert bare["workers"][3]["dear_thread"] is None and bare["workers"][3]["thread_cpu_us_per_image"] == {}


def test_straggler_threshold_is_ten_percent():
    near = [_worker(0, 100), _worker(1, 100), _worker(2, 91)]  # 9% below: not a straggler
    far = [_worker(0, 100), _worker(1, 100), _worker(2, 89)]
    assert build_report({}, near)["summary"]["stragglers"] == []
    assert build_report({}, far)["summary"]["stragglers"] == [2]
    assert build_report({}, [_worker(0, 1)])["summary"]["stragglers"] == []  # one worker: never


def test_stages_seconds_and_fractions(metrics):
    data = build_report({}, metrics)
    total_wall = sum(m.wall_s for m in metrics)  # 29 worker-seconds
    st = data["stages"]
    assert list(st) == ["read", "decode", "h2d", "input", "compute"]  # pipeline order
    assert st["decode"]["seconds"] == pytest.approx(11.0)
    assert st["decode"]["fraction"] == pytest.approx(11.0 / total_wall)
    assert st["h2d"]["seconds"] == pytest.approx(0.5)
    assert data["summary"]["bottleneck"] == "decode"
    assert data["workers"][1]["stages"]["compute"]["fraction"] == pytest.approx(3.0 / 9.0)


def test_job_wall_time_given_wins(metrics):
    data = build_report({"wall_s": 20.0}, metrics)
    assert data["summary"]["wall_s"] == 20.0
    assert data["summary"]["images_per_s"] == pytest.approx(data["summary"]["images"] / 20.0)


def test_no_metrics_is_a_clear_error():
    with pytest.raises(ReportError, match="no worker metrics"):
        build_report({}, [])


def test_series_are_on_the_job_clock_and_downsampled():
    late = _worker(1, 10, start=3.0)
    many = Metrics(worker=0, started_at=T0, samples=[(i * 0.01, i) for i in range(5000)], images=4999,
                   wall_s=50.0)
    data = build_report({}, [many, late])
    series = data["series"]["workers"]
    assert data["series"]["t0"] == T0
    assert series["1"][0][0] == pytest.approx(late.samples[0][0] + 3.0)
    assert len(series["0"]) <= report.MAX_SERIES_POINTS
    assert series["0"][0] == [0.0, 0] and series["0"][-1] == [49.99, 4999]


def test_throughput_curves_recover_constant_rates():
    a = [(t, 100 * t) for t in np.arange(1.0, 60.0, 0.5)]
    b = [(t, 50 * (t - 10)) for t in np.arange(11.0, 60.0, 0.5)]
    grid, per, total = throughput_curves({"a": a, "b": b})
    mid = (grid > 20) & (grid < 55)
    assert np.allclose(per["a"][mid], 100, rtol=0.02)
    assert np.allclose(per["b"][mid], 50, rtol=0.02)
    assert np.allclose(total[mid], 150, rtol=0.02)
    assert np.all(np.isnan(per["b"][grid < 10]))  # no line before a worker's first images


# -- files ------------------------------------------------------------------------------------

def test_write_report_files(tmp_path, metrics):
    rep = write_report(tmp_path / "out", {"name": "nightly", "model": "r50.plan", "batch": 64}, metrics)
    assert rep.json_path.is_file() and rep.md_path.is_file() and rep.png_path.is_file()
    data = json.loads(rep.json_path.read_text())
    assert data["summary"] == rep.data["summary"]
    assert data["format"] == report.REPORT_FORMAT and data["job"]["model"] == "r50.plan"
    width, height = _is_png(rep.png_path)
    assert width > 300 and height > 200


def test_markdown_has_summary_first(tmp_path, metrics):
    rep = write_report(tmp_path, {"name": "nightly", "model": "r50.plan"}, metrics)
    md = rep.md_path.read_text()
    s = rep.data["summary"]
    assert md.startswith("# Report: nightly\n")
    for text in (f"{s['images']:,}", "2 errors", f"{s['images_per_s']:,.0f} images/s", "10.0 s",
                 "3 workers", "560 W", "worker 2 (", "below median", "decode", "GPU busy"):
        assert text in md, text
    assert md.index("| Summary") < md.index("## Workers") < md.index("## Stages") < md.index("## Job")
    assert "(straggler)" in md and "`r50.plan`" in md and "throughput.png" in md
    assert len(md.splitlines()) < 60  # short: no log dump


def test_markdown_without_power_or_stages(tmp_path):
    rep = write_report(tmp_path, {}, [_worker(0, 10)])
    md = rep.md_path.read_text()
    assert "Power" not in md and "Watts" not in md and "## Stages" not in md
    assert "no errors" in md and "1 worker " in md and "Stragglers" not in md


def test_render_reproduces_the_files(tmp_path, metrics):
    rep = write_report(tmp_path, {"name": "x"}, metrics)
    md, png = rep.md_path.read_bytes(), rep.png_path.read_bytes()
    rep.md_path.unlink()
    rep.png_path.unlink()
    again = render(tmp_path)
    assert again.md_path.read_bytes() == md
    assert again.png_path.read_bytes() == png
    assert render(tmp_path / "report.json").data == rep.data


def test_render_errors(tmp_path):
    with pytest.raises(ReportError, match="no report.json"):
        render(tmp_path / "missing")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ReportError, match="cannot be read as JSON"):
        render(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"format": 99, "summary": {}, "workers": []}))
    with pytest.raises(ReportError, match="newer"):
        render(tmp_path)


def test_no_nan_in_json(tmp_path):
    m = _worker(0, 10, busy_fraction=float("nan"))
    rep = write_report(tmp_path, {}, [m])
    assert json.loads(rep.json_path.read_text())["workers"][0]["busy_fraction"] is None


def test_no_matplotlib_still_writes_json_and_markdown(tmp_path, monkeypatch, metrics):
    monkeypatch.setattr(report, "_pyplot", lambda: None)
    rep = write_report(tmp_path, {}, metrics)
    assert rep.png_path is None and rep.md_path.is_file() and not (tmp_path / "throughput.png").exists()


def test_decode_paths_are_summed_over_the_workers_that_counted_them(metrics, tmp_path):
    metrics[0].decoded_by = {"hardware": 95, "nvimgcodec": 3, "tensor": 0, "cpu": 2}
    metrics[1].decoded_by = {"hardware": 100, "nvimgcodec": 0, "tensor": 0, "cpu": 0}
    data = build_report({}, metrics)
    assert data["summary"]["decoded_by"] == {"hardware": 195, "nvimgcodec": 3, "tensor": 0, "cpu": 2}
    assert [w["decoded_by"] for w in data["workers"]][2] is None  # worker 2 counted nothing
    text = write_report(tmp_path, {}, metrics).md_path.read_text()
    assert ("| Decoded by | the GPU's hardware JPEG decoder 97.5% (195), nvImageCodec 1.5% (3), "
            "Pillow on the CPU 1.0% (2) |") in text
    for m in metrics:
        m.decoded_by = {}
    assert build_report({}, metrics)["summary"]["decoded_by"] is None
    assert "Decoded by" not in write_report(tmp_path, {}, metrics).md_path.read_text()


def test_the_way_each_engine_took_its_slots_is_reported(metrics, tmp_path):
    for m in metrics:
        m.slot_input = "in place"
    assert [w["slot_input"] for w in build_report({}, metrics)["workers"]] == ["in place"] * len(metrics)
    assert "| Engine input | in place |" in write_report(tmp_path, {}, metrics).md_path.read_text()
    metrics[1].slot_input = "copied: BATCHSCORE_SLOT_INPUT=0"
    metrics[2].slot_input = None  # a CPU worker, say
    text = write_report(tmp_path, {}, metrics).md_path.read_text()
    assert (f"| Engine input | in place (workers {metrics[0].worker}); copied: BATCHSCORE_SLOT_INPUT=0 "
            f"(workers {metrics[1].worker}) |") in text
    for m in metrics:
        m.slot_input = None
    assert "Engine input" not in write_report(tmp_path, {}, metrics).md_path.read_text()


def test_the_priority_of_nvjpegs_streams_is_reported(metrics, tmp_path):
    for m in metrics:
        m.nvjpeg_streams = "priority -1000 (7 streams)"
    assert [w["nvjpeg_streams"] for w in build_report({}, metrics)["workers"]] == ["priority -1000 (7 streams)"] * len(metrics)
    assert "| nvJPEG streams | priority -1000 (7 streams) |" in write_report(tmp_path, {}, metrics).md_path.read_text()
    metrics[0].nvjpeg_streams = "left as nvJPEG makes them: BATCHSCORE_NVJPEG_STREAM_PRIORITY=default"
    text = write_report(tmp_path, {}, metrics).md_path.read_text()
    assert f"left as nvJPEG makes them: BATCHSCORE_NVJPEG_STREAM_PRIORITY=default (workers {metrics[0].worker})" in text
    assert Metrics.from_dict(metrics[0].to_dict()).nvjpeg_streams == metrics[0].nvjpeg_streams
    for m in metrics:
        m.nvjpeg_streams = None
    assert "nvJPEG streams" not in write_report(tmp_path, {}, metrics).md_path.read_text()


def test_the_cpus_left_for_the_gpus_interrupts_are_reported(metrics, tmp_path):
    metrics[0].interrupt_cpus = "CPU 14"
    data = build_report({}, metrics)
    assert [w["interrupt_cpus_left"] for w in data["workers"]] == ["CPU 14", None, None]
    text = write_report(tmp_path, {}, metrics).md_path.read_text()
    assert f"| GPU interrupt CPUs left | CPU 14 (workers {metrics[0].worker}) |" in text
    assert Metrics.from_dict(metrics[0].to_dict()).interrupt_cpus == "CPU 14"
    metrics[0].interrupt_cpus = None
    assert "GPU interrupt CPUs" not in write_report(tmp_path, {}, metrics).md_path.read_text()


# -- Metrics helpers --------------------------------------------------------------------------

def test_metrics_helpers_and_round_trip():
    m = Metrics(worker="w3", device="cpu")
    with m.stage("decode"):
        pass
    m.add_stage("compute", 0.25)
    m.add_stage("compute", 0.25)
    m.tick(64, 1)
    m.tick(128, 1)  # within 0.25 s of the last sample: not kept
    m.decoded_by = {"hardware": 120, "cpu": 8}
    m.finish()
    assert m.stages["compute"] == 0.5 and "decode" in m.stages
    assert m.images == 128 and m.errors == 1 and m.startup_s is not None
    assert m.samples[0][1] == 64 and m.samples[-1] == (m.wall_s, 128) and len(m.samples) == 2
    back = Metrics.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back == m


def test_finish_records_the_process_cpu_time():
    m = Metrics(worker=0)
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn CPU on this thread
        pass
    m.finish()
    assert 0.2 <= m.cpu_s < 0.2 + 5.0 and m.host_cores >= 1


def test_cpu_time_per_image_and_cores_busy(tmp_path):
    workers = [_worker(k, 100, stages={"decode": 5.0}, cpu_s=cpu, host_cores=8) for k, cpu in ((0, 20.0), (1, 30.0))]
    data = build_report({"wall_s": 10.0}, workers)
    s = data["summary"]
    images = sum(m.images for m in workers)
    assert s["cpu_us_per_image"] == pytest.approx(1e6 * 50.0 / images)
    assert s["cpu_cores_busy"] == pytest.approx(5.0) and s["host_cores"] == 8  # one host, counted once
    assert [w["cpu_cores_busy"] for w in data["workers"]] == pytest.approx([2.0, 3.0])
    write_report(tmp_path, {"wall_s": 10.0}, workers)
    assert "| Worker CPU | " in (tmp_path / "report.md").read_text() and "5.0 cores busy on average of 8" in (
        tmp_path / "report.md").read_text()
    # a worker that did not measure it: no job figure rather than a partial one
    partial = build_report({}, [workers[0], _worker(2, 100)])
    assert partial["summary"]["cpu_us_per_image"] is None


# -- Progress ---------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_plain_lines_when_not_a_tty():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(1000, stream=out, clock=clock, label="scoring")
    assert not p.tty
    for _ in range(25):
        clock.t += 1.0
        p.update(20, errors=1 if clock.t == 3 else 0)
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 4  # at 1 s, 11 s, 21 s, and the final line
    assert lines[0].startswith("scoring") and "20/1,000 (2%)" in lines[0]
    assert "220/1,000 (22%)" in lines[1] and "20.0 images/s" in lines[1]
    assert "ETA 0:39" in lines[1] and "1 error" in lines[1]
    assert "500/1,000 (50%)" in lines[3] and "in 0:25" in lines[3] and "ETA" not in lines[3]


def test_progress_rate_is_over_the_last_seconds():
    clock = FakeClock()
    p = Progress(None, stream=io.StringIO(), clock=clock, window_s=5.0)
    for _ in range(20):
        clock.t += 1.0
        p.update(10)
    for _ in range(10):
        clock.t += 1.0
        p.update(100)
    assert p.rate() == pytest.approx(100.0)
    assert "images/s" in p.line() and "ETA" not in p.line()  # no total: no ETA


def test_progress_tty_redraws_at_most_four_times_a_second():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(10_000, stream=out, clock=clock, tty=True)
    for _ in range(200):  # 2 s of updates every 10 ms
        clock.t += 0.01
        p.update(5)
    p.close()
    text = out.getvalue()
    assert text.count("\r") <= 2 * 4 + 2 and text.endswith("\n")
    assert "1,000/10,000" in text.split("\r")[-1]


def test_progress_quiet_writes_nothing():
    out = io.StringIO()
    with Progress(10, stream=out, quiet=True) as p:
        p.update(10)
        p.set(10, 1)
    assert out.getvalue() == ""


# -- NVML sampler -----------------------------------------------------------------------------

def test_sampler_is_a_no_op_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    m = Metrics(worker=0)
    with nvml_power_sampler(0, interval_s=0.01) as s:
        pass
    assert not s.available and s.watts == [] and s.util == [] and s.energy_j is None
    s.record_into(m)
    assert m.watts == [] and m.gpu_util == [] and m.energy_j is None


def _fake_nvml(*, init_fails=False, gpus=("GPU-a", "GPU-b")):
    nv = types.ModuleType("pynvml")
    nv.calls = []

    def init():
        if init_fails:
            raise RuntimeError("NVML Shared Library Not Found")

    def by_index(i):
        if i >= len(gpus):
            raise RuntimeError("Invalid Argument")
        nv.calls.append(("index", i))
        return gpus[i]

    def by_uuid(u):
        nv.calls.append(("uuid", u))
        return u

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetHandleByIndex = by_index
    nv.nvmlDeviceGetHandleByUUID = by_uuid
    nv.nvmlDeviceGetPowerUsage = lambda h: 250_000  # mW
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=75)
    energy = iter(range(1_000_000, 10**9, 100_000))  # mJ, rising
    nv.nvmlDeviceGetTotalEnergyConsumption = lambda h: next(energy)
    return nv


def test_sampler_is_a_no_op_when_nvml_finds_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(init_fails=True))
    assert not nvml_power_sampler(0).available
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(gpus=()))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    s = nvml_power_sampler(0, interval_s=0.01).start()
    s.stop()
    assert not s.available and s.watts == []


def test_sampler_with_nvml_samples_and_maps_visible_devices(monkeypatch):
    nv = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    m = Metrics(worker=0)
    with nvml_power_sampler(0, interval_s=0.01, t0=m.started_at) as s:
        import time

        time.sleep(0.05)
    assert s.available and nv.calls[0] == ("index", 1)  # CUDA device 0 is physical GPU 1
    assert len(s.watts) >= 2 and all(w == 250.0 for _, w in s.watts)
    assert all(u == 75.0 for _, u in s.util) and s.energy_j > 0 and s.energy_s > 0
    s.record_into(m)
    assert m.watts == s.watts and m.energy_j == s.energy_j
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-b,GPU-a")
    assert nvml_power_sampler(1).available and nv.calls[-1] == ("uuid", "GPU-a")


# -- scaling ----------------------------------------------------------------------------------

def test_combine_scaling(tmp_path):
    runs = []
    for n, per_worker in ((1, 100), (2, 96), (4, 80)):
        d = tmp_path / "scaling" / f"w{n}"
        write_report(d, {"name": f"{n} workers"}, [_worker(k, per_worker) for k in range(n)])
        runs.append(d)
    result = combine_scaling(reversed(runs))
    rows = result["runs"]
    assert [r["workers"] for r in rows] == [1, 2, 4]
    base = rows[0]["images_per_s"]
    assert result["baseline_workers"] == 1 and result["baseline_images_per_s"] == pytest.approx(base)
    for r, pw in zip(rows, (100, 96, 80)):
        assert r["images_per_s_per_worker"] == pytest.approx(r["images_per_s"] / r["workers"])
        assert r["speedup"] == pytest.approx(r["images_per_s"] / base)
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["workers"])
        assert r["efficiency"] == pytest.approx(pw / 100, rel=1e-6)
    out = tmp_path / "scaling"  # the runs' common parent
    assert result["files"]["png"] == str(out / "scaling.png")
    _is_png(out / "scaling.png")
    assert json.loads((out / "scaling.json").read_text())["runs"] == rows
    assert "| 4 | " in (out / "scaling.md").read_text()


def test_combine_scaling_shows_each_stragglers_dear_thread(tmp_path):
    def worker(k, rate, read_us):
        images = round(rate * 9.5)
        return _worker(k, rate, thread_cpu_s={"main": images * 8e-6, "read": images * read_us * 1e-6})

    one, four = tmp_path / "w1", tmp_path / "w4"
    write_report(one, {}, [worker(0, 100, 12)])
    write_report(four, {}, [worker(0, 100, 12), worker(1, 60, 36), worker(2, 100, 12), worker(3, 80, 13)])
    rows = combine_scaling([one, four], tmp_path)["runs"]
    assert rows[1]["stragglers"] == [1, 3] and rows[1]["dear_threads"] == {"1": "read"}
    assert "| 1 (read), 3 |" in (tmp_path / "scaling.md").read_text()


def test_reports_name_the_slow_cpus_a_worker_left(tmp_path):
    left = {"cpu": 15, "thread": "read", "us_per_row": 44.2, "elsewhere": 47, "elsewhere_us_per_row": 20.1}
    slow = _worker(1, 100, slow_cpus=[left])
    report = write_report(tmp_path / "w2", {}, [_worker(0, 100), slow])
    workers = report.data["workers"]
    assert workers[0]["slow_cpus_left"] == [] and workers[1]["slow_cpus_left"] == [left]
    md = (tmp_path / "w2" / "report.md").read_text()
    assert "| Slow CPUs left | worker 1: CPU 15 (read thread: 44 µs of CPU per row there, 20 on CPU 47) |" in md
    rows = combine_scaling([tmp_path / "w2"], tmp_path)["runs"]
    assert rows[0]["slow_cpus_left"] == {"1": [15]}
    write_report(tmp_path / "w1", {}, [_worker(0, 100)])
    assert "Slow CPUs" not in (tmp_path / "w1" / "report.md").read_text()


def test_combine_scaling_separates_start_up_from_the_steady_state(tmp_path):
    # every worker runs 100 images/s once started, but start-up grows with the worker count: the
    # launch-to-end efficiency falls, the steady one stays linear
    runs = []
    for n in (1, 2, 4):
        d = tmp_path / f"w{n}"
        write_report(d, {}, [_worker(k, 100 if (n, k) != (4, 3) else 70, startup=1.0 + n, wall=12.0)
                             for k in range(n)])
        runs.append(d)
    result = combine_scaling(runs, out_dir=tmp_path / "table")
    by_workers = {r["workers"]: r for r in result["runs"]}
    assert result["baseline_steady_images_per_s"] == pytest.approx(100, rel=1e-6)
    assert by_workers[2]["steady_images_per_s"] == pytest.approx(200, rel=1e-6)
    assert by_workers[2]["steady_efficiency"] == pytest.approx(1.0, rel=1e-6)
    assert by_workers[4]["steady_efficiency"] == pytest.approx(370 / 400, rel=1e-6)  # one worker at 70
    assert by_workers[2]["efficiency"] < 0.95 and by_workers[4]["efficiency"] < 0.95
    assert by_workers[2]["stragglers"] == [] and by_workers[4]["stragglers"] == [3]
    table = (tmp_path / "table" / "scaling.md").read_text()
    assert "Steady efficiency" in table and "| 2 | " in table and "100%" in table and "| 3 |" in table


def test_combine_scaling_baseline_above_one_worker(tmp_path):
    runs = []
    for n in (2, 4, 8):
        d = tmp_path / f"w{n}"
        write_report(d, {}, [_worker(k, 100 if n < 8 else 76) for k in range(n)])
        runs.append(d)
    result = combine_scaling(runs, out_dir=tmp_path / "table")
    eff = {r["workers"]: r["efficiency"] for r in result["runs"]}
    assert eff[2] == pytest.approx(1.0) and eff[4] == pytest.approx(1.0) and eff[8] == pytest.approx(0.76)
    assert (tmp_path / "table" / "scaling.png").is_file()
    with pytest.raises(ReportError, match="no report.json"):
        combine_scaling([tmp_path / "nothing"])


def test_combine_scaling_gives_each_stages_time_per_image(tmp_path):
    # every worker scores 100 images/s; with 4 workers each spends 1.5x as long decoding an image
    runs = []
    for n, decode in ((1, 4.0), (4, 6.0)):
        d = tmp_path / f"w{n}"
        write_report(d, {}, [_worker(k, 100, stages={"read": 1.0, "decode": decode, "compute": 3.0, "load": 2.0},
                                     cpu_s=8.0) for k in range(n)])
        runs.append(d)
    result = combine_scaling(runs, out_dir=tmp_path / "table")
    one, four = result["runs"]
    images_one, images_four = one["images"], four["images"]
    assert one["stage_us_per_image"] == pytest.approx(
        {"read": 1e6 * 1.0 / images_one, "decode": 1e6 * 4.0 / images_one, "compute": 1e6 * 3.0 / images_one,
         "cpu": 1e6 * 8.0 / images_one})
    assert four["stage_us_per_image"]["cpu"] == pytest.approx(1e6 * 8.0 * 4 / images_four)
    assert four["stage_us_per_image"]["decode"] == pytest.approx(1e6 * 6.0 * 4 / images_four)
    assert "load" not in four["stage_us_per_image"]  # once per worker, not per image
    table = (tmp_path / "table" / "scaling.md").read_text()
    assert "## Stage time per image" in table and "(1.50x)" in table and "| cpu |" in table
    compute_cells = [line.split("|")[4].strip() for line in table.splitlines()
                     if line.startswith("| 1 |") or line.startswith("| 4 |")][-2:]
    assert all("x)" not in cell for cell in compute_cells)  # unchanged per image: no ratio shown


def test_the_scaling_plot_draws_each_measure_against_its_own_linear_line(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    drawn = {}

    def keep(fig, path):  # look at the figure instead of only its PNG
        ax = fig.axes[0]
        drawn["lines"] = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
        drawn["labels"] = [(text.get_text(), text.get_color()) for text in ax.texts]

    monkeypatch.setattr(report, "_save", keep)
    result = {"baseline_workers": 1, "baseline_images_per_s": 100.0, "baseline_steady_images_per_s": 300.0,
              "runs": [{"workers": 1, "images_per_s": 100.0, "efficiency": 1.0,
                        "steady_images_per_s": 300.0, "steady_efficiency": 1.0},
                       {"workers": 4, "images_per_s": 300.0, "efficiency": 0.75,
                        "steady_images_per_s": 1140.0, "steady_efficiency": 0.95}]}
    assert report.plot_scaling(result, tmp_path / "scaling.png")
    lines = drawn["lines"]
    assert list(lines["linear, launch to end"]) == [0.0, 400.0]
    assert list(lines["linear, steady state"]) == [0.0, 1200.0]
    assert list(lines["measured, steady state"]) == [300.0, 1140.0]
    assert ("75%", "C0") in drawn["labels"] and ("95%", "C1") in drawn["labels"]
