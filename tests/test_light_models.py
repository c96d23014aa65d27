"""The nine light_* model-zoo graphs shipped in the onnx package, with seeded random weights:
import, build, save; load and run in a fresh process through `batchscore infer`; match onnxruntime.

Their final Softmax saturates with random weights, so the logits feeding it are made a second
graph output and compared too.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine.onnx_tools import expose_logits, seeded_weights
from tests.light_zoo import MODELS, load

ort = pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm((got - want).ravel()) / max(np.linalg.norm(want.ravel()), 1e-30))


@pytest.mark.parametrize("name", MODELS)
def test_light_model_matches_onnxruntime_in_a_fresh_process(name, tmp_path):
    model = expose_logits(seeded_weights(load(name), seed=0))
    plan_path = tmp_path / f"{name}.plan"
    engine.build(model).save(plan_path)

    input_name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "launchers.cli", "infer", str(plan_path), "--input", f"{input_name}={tmp_path / 'x.npy'}",
         "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    want = session.run(None, {input_name: x})
    assert len(want) == len(model.graph.output)
    for spec, expected in zip(model.graph.output, want):
        actual = got[spec.name]
        assert actual.shape == expected.shape, spec.name
        assert np.isfinite(expected).all()
        assert _relative_l2(actual, expected) < 1e-4, f"{name} {spec.name}: rel L2 {_relative_l2(actual, expected):.2e}"
