"""The command line: build and infer end to end, and one clear paragraph (no traceback) with a
non-zero exit for each kind of bad input."""

import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import tiny_model

ROOT = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))


def batchscore(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "launchers.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.fixture
def tiny_onnx(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_model().SerializeToString())
    return path


def assert_clean_failure(proc, pattern):
    import re

    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert re.search(pattern, proc.stderr, re.S), proc.stderr


def test_build_then_infer(tiny_onnx, tmp_path):
    plan = tmp_path / "tiny.plan"
    proc = batchscore("build", tiny_onnx, "-o", plan, "--max-batch", "16")
    assert proc.returncode == 0, proc.stderr
    assert "max batch 16" in proc.stdout and plan.exists()
    x = np.array([[-1, 0, 2]], np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = batchscore("infer", plan, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "y.npz")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["y"], np.maximum(x, 0) + x)
    # a plan with one input takes the file without the NAME= prefix
    assert batchscore("infer", plan, "--input", tmp_path / "x.npy").returncode == 0


def test_help_reads_well():
    proc = batchscore("--help")
    assert proc.returncode == 0 and "build" in proc.stdout and "infer" in proc.stdout
    proc = batchscore("build", "--help")
    assert "--max-batch" in proc.stdout and "--input-shape" in proc.stdout


def test_truncated_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_model().SerializeToString()[:20])
    assert_clean_failure(batchscore("build", bad), r"bad\.onnx.*not a readable ONNX model")


def test_unknown_op(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], name="weird")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "weird.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    assert_clean_failure(batchscore("build", path), r"NoSuchOp \(opset 13\): 1 node\(s\): weird")


def test_wrong_input_shape_dtype_and_missing_input(tiny_onnx, tmp_path):
    plan = tmp_path / "tiny.plan"
    assert batchscore("build", tiny_onnx, "-o", plan).returncode == 0
    np.save(tmp_path / "wide.npy", np.zeros((1, 4), np.float32))
    assert_clean_failure(batchscore("infer", plan, "--input", f"x={tmp_path / 'wide.npy'}"), r"axis 1 must be 3")
    np.save(tmp_path / "f64.npy", np.zeros((1, 3), np.float64))
    assert_clean_failure(batchscore("infer", plan, "--input", f"x={tmp_path / 'f64.npy'}"), r"dtype float64")
    assert_clean_failure(batchscore("infer", plan, "--input", f"other={tmp_path / 'f64.npy'}"), r"unknown input")
    assert_clean_failure(batchscore("infer", plan, "--input", f"x={tmp_path / 'nope.npy'}"), r"no such file")


def test_corrupted_plan(tiny_onnx, tmp_path):
    plan = tmp_path / "tiny.plan"
    assert batchscore("build", tiny_onnx, "-o", plan).returncode == 0
    blob = bytearray(plan.read_bytes())
    blob[-1] ^= 0x55
    plan.write_bytes(bytes(blob))
    np.save(tmp_path / "x.npy", np.zeros((1, 3), np.float32))
    assert_clean_failure(batchscore("infer", plan, "--input", tmp_path / "x.npy"), r"tiny\.plan.*corrupted")


def test_bad_arguments_are_usage_errors(tiny_onnx):
    proc = batchscore("build", tiny_onnx, "--input-shape", "x:1x-3")
    assert proc.returncode == 2 and "positive integer or a name" in proc.stderr
    proc = batchscore("build", tiny_onnx, "--input-shape", "x1x3")
    assert proc.returncode == 2 and "NAME:DIMS" in proc.stderr
    proc = batchscore("build", tiny_onnx, "--max-batch", "0")
    assert proc.returncode == 2 and "at least 1" in proc.stderr


def test_a_bad_fp16_layer_bound_is_one_clear_line(tiny_onnx):
    assert "--fp16-layer-bound" in batchscore("build", "--help").stdout
    assert_clean_failure(batchscore("build", tiny_onnx, "--fp16-layer-bound", "0"),
                         r"fp16_layer_bound must be a positive number, got 0")
