"""The nine light_* graphs of the onnx package (seeded random weights) on the CUDA backend against
the numpy backend: FP32 within 1e-4, FP16 within 1e-2 and the same top-1 (run on the GPU machine;
skipped without a GPU)."""

import numpy as np
import pytest

import engine
from engine.builder import BuildConfig
from engine.precision import relative_error

pytestmark = pytest.mark.gpu
onnx = pytest.importorskip("onnx")

from engine.onnx_tools import expose_logits, seeded_weights  # noqa: E402  (needs onnx)
from tests.light_zoo import MODELS, load  # noqa: E402

INPUTS = 8  # random images per model; the light graphs have a fixed batch of 1


def _outputs(plan, images):
    context = engine.engine_for(plan).create_context()
    name = plan.inputs[0]["name"]
    runs = [context.run({name: x}) for x in images]
    return {key: np.concatenate([r[key] for r in runs]) for key in runs[0]}


@pytest.mark.parametrize("name", MODELS)
def test_light_models_on_the_gpu_match_the_numpy_backend(name):
    model = expose_logits(seeded_weights(load(name), seed=0))
    rng = np.random.default_rng(1)
    images = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(INPUTS)]
    want = _outputs(engine.build(model), images)
    logits = model.graph.output[-1].name  # the Softmax's input where there is one (expose_logits)
    for precision, bound in (("fp32", 1e-4), ("fp16", 1e-2)):
        got = _outputs(engine.build(model, BuildConfig(device="cuda", precision=precision)), images)
        for key, expected in want.items():
            assert np.isfinite(got[key]).all(), f"{name} {precision} {key}: not finite"
            error = relative_error(got[key], expected)
            assert error <= bound, f"{name} {precision} {key}: {error:.2e}"
        assert (got[logits].argmax(1) == want[logits].argmax(1)).all(), f"{name} {precision}: top-1 differs"
