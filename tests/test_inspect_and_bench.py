"""`batchscore inspect` and `batchscore bench` (the numpy path; the GPU path runs in tests/gpu)."""

import json

import pytest

import engine
from engine import zoo
from engine.builder import BuildConfig
from engine.inspect import describe_plan
from tests.test_cli import batchscore


@pytest.fixture(scope="module")
def googlenet_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "googlenet.plan"
    engine.build(zoo.get("googlenet", image_size=40), BuildConfig(max_batch=4)).save(path)
    return path


def test_inspect_shows_fused_members_tactics_and_the_arena(googlenet_plan):
    proc = batchscore("inspect", googlenet_plan)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "conv1.conv + conv1.bn + conv1.relu" in out  # a fused layer names its source nodes
    assert "FusedConv" in out and "numpy" in out and "fp32" in out
    assert "writes " in out and "[axis 1:" in out  # producers of an elided concat write its slices
    assert "arena @" in out and "activation arena at batch 4" in out


def test_inspect_json_totals_agree_with_the_plan(googlenet_plan):
    proc = batchscore("inspect", googlenet_plan, "--json")
    info = json.loads(proc.stdout)
    plan = engine.read_plan(googlenet_plan)
    assert info["totals"] == describe_plan(plan)["totals"]
    assert info["totals"]["layers"] == len(plan.layers)
    assert info["totals"]["source_nodes"] == len(zoo.get("googlenet", image_size=40).nodes)
    assert 0 < info["totals"]["arena_bytes"] < info["totals"]["activation_bytes"]


def test_inspect_refuses_a_file_that_is_not_a_plan(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a plan at all: " + "words " * 40)
    proc = batchscore("inspect", bogus)
    assert proc.returncode == 1 and "not a batchscore plan" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_on_the_numpy_backend_writes_json(googlenet_plan, tmp_path):
    out = tmp_path / "bench.json"
    proc = batchscore("bench", googlenet_plan, "--batch", "1,4", "--iterations", "3", "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [row["batch"] for row in result["rows"]] == [1, 4]
    assert all(row["images_per_s"] > 0 and row["latency_ms"]["min"] <= row["latency_ms"]["p99"] for row in result["rows"])
    assert "batch    4" in proc.stdout


def test_bench_refuses_batches_over_the_plans_max(googlenet_plan):
    proc = batchscore("bench", googlenet_plan, "--batch", "8")
    assert proc.returncode == 1 and "exceeds the plan's max batch 4" in proc.stderr
    proc = batchscore("bench", googlenet_plan, "--batch", "two")
    assert proc.returncode == 1 and "comma-separated list of integers" in proc.stderr


def test_bench_builds_an_onnx_model_for_this_machine(tmp_path):
    from tests.helpers import tiny_model

    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_model().SerializeToString())
    out = tmp_path / "bench.json"
    proc = batchscore("bench", model, "--batch", "2", "--iterations", "3", "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["rows"][0]["batch"] == 2 and result["device"]["kind"] in ("cpu", "cuda")


@pytest.mark.parametrize("energy_j, energy_s, watts, expected", [
    (600.0, 1.5, [(0.0, 80.0), (0.5, 150.0)], 400.0),   # the energy counter over the window wins
    (None, None, [(0.0, 80.0), (0.5, 150.0)], 115.0),    # no counter: the mean of the samples
    (0.0, 0.02, [(0.0, 480.0), (0.02, 490.0)], 485.0),   # the counter did not tick in 20 ms (was 0 W)
    (None, None, [], None),                              # nothing read at all
])
def test_bench_power_prefers_the_energy_counter(energy_j, energy_s, watts, expected):
    from types import SimpleNamespace

    from scoring.report import average_watts

    sampler = SimpleNamespace(energy_j=energy_j, energy_s=energy_s, watts=watts)
    assert average_watts(sampler) == (pytest.approx(expected) if expected is not None else None)


def test_inspect_widens_the_tactic_column_for_cudnn_engine_names(googlenet_plan):
    from engine.inspect import format_plan

    info = describe_plan(engine.read_plan(googlenet_plan))
    info["layers"][0]["tactic"] = "cudnn:28:eng41_k2=7_k13=0_k18=0_k25=0_k27=1_k28=1"  # as a GPU plan records it
    lines = format_plan(info).splitlines()
    header = next(line for line in lines if line.strip().startswith("#"))
    rows = [line for line in lines if "arena @" in line]
    assert len(rows) > 10 and {row.index("arena @") for row in rows} == {header.index("memory")}
