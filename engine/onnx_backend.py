"""An `onnx.backend.base.Backend` over the engine, so ONNX's own test runner can check it.

`prepare` builds a plan, round-trips it through the plan file format (so every conformance case
also checks serialization), and loads it; `run` feeds inputs in graph-input order. Build side only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from engine.builder import BuildConfig, build
from engine.plan import decode_plan
from engine.runtime import Engine


class EngineRep(BackendRep):
    def __init__(self, engine: Engine):
        self.engine = engine
        self.context = engine.create_context()

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        names = [spec.name for spec in self.engine.inputs]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(names, inputs))
        outputs = self.context.run(feeds)
        return tuple(outputs[spec.name] for spec in self.engine.outputs)


class EngineBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return device == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EngineRep:
        plan = build(model, BuildConfig(**kwargs))
        reloaded = decode_plan(plan.to_bytes(), f"<plan of {model.graph.name}>")
        return EngineRep(Engine(reloaded))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> Sequence[np.ndarray]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"
