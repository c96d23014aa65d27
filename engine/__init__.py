"""batchscore's inference engine: build a plan once, load it anywhere, run it.

    import engine
    plan = engine.build("model.onnx", engine.BuildConfig(max_batch=64))
    plan.save("model.plan")
    eng = engine.load("model.plan")        # runtime only: numpy (+ cupy on a GPU), never onnx
    ctx = eng.create_context()
    outputs = ctx.run({"input": batch})
"""

from engine.errors import (
    BatchscoreError,
    BuildError,
    InputError,
    LayerError,
    ModelImportError,
    PlanFormatError,
    UnsupportedOpsError,
)
from engine.plan import Plan, read_plan
from engine.runtime import Engine, ExecutionContext, engine_for, load
from engine.version import __version__


def build(model, config=None) -> Plan:
    """Build a plan from an ONNX model (path, bytes or ModelProto) or an IR Graph."""
    from engine.builder import build as _build  # keeps the build side out of runtime imports

    return _build(model, config)


def __getattr__(name):
    if name == "BuildConfig":
        from engine.builder import BuildConfig

        return BuildConfig
    raise AttributeError(name)


__all__ = [
    "BatchscoreError", "BuildConfig", "BuildError", "Engine", "ExecutionContext", "InputError",
    "LayerError", "ModelImportError", "Plan", "PlanFormatError", "UnsupportedOpsError",
    "__version__", "build", "engine_for", "load", "read_plan",
]
