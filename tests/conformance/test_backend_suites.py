"""ONNX's official BackendTest runner over the engine, for the model suites shipped in the onnx
package: 'real' (the nine light_* model-zoo graphs, with their stored outputs), 'simple',
'pytorch-converted' and 'pytorch-operator'. Every model whose ops the engine supports must pass;
the others are listed by `test_backend_coverage_report`, which prints what was left out and why.
"""

import os

import onnx
import onnx.backend.test
from onnx.backend.test.loader import load_model_tests

from engine.onnx_backend import EngineBackend
from kernels.cpu import CPU_OPS

KINDS = ("real", "simple", "pytorch-converted", "pytorch-operator")
_ONNX_DIR = os.path.dirname(onnx.__file__)


def _model_path(case) -> str:
    if case.model_dir:
        return os.path.join(case.model_dir, "model.onnx")
    return os.path.normpath(os.path.join(_ONNX_DIR, "..", case.url))  # light_* files inside the package


def _unsupported_ops(case) -> set[str]:
    model = onnx.load(_model_path(case))
    return {n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")} | (
        {n.op_type for n in model.graph.node} - CPU_OPS.op_types()
    )


CASES = {kind: load_model_tests(kind=kind) for kind in KINDS}
SUPPORTED = sorted(c.name for cases in CASES.values() for c in cases if not _unsupported_ops(c))
LEFT_OUT = {c.name: sorted(_unsupported_ops(c)) for cases in CASES.values() for c in cases if _unsupported_ops(c)}


def _runner_classes() -> dict[str, type]:
    """The runner's unittest classes, holding only the CPU tests of supported models (the runner
    would otherwise report every other model as a skip)."""
    runner = onnx.backend.test.BackendTest(EngineBackend, __name__)
    wanted = {f"{name}_cpu" for name in SUPPORTED}
    classes = {}
    for class_name, cls in runner.test_cases.items():
        if "NodeModel" in class_name:  # node cases run in test_node_cases.py
            continue
        for attr in [a for a in vars(cls) if a.startswith("test_")]:
            if attr not in wanted:
                delattr(cls, attr)
        if any(a.startswith("test_") for a in vars(cls)):
            classes[class_name] = cls
    return classes


globals().update(_runner_classes())


def test_backend_coverage_report(capsys):
    total = sum(len(c) for c in CASES.values())
    assert len(SUPPORTED) + len(LEFT_OUT) == total
    # The nine light_* models and every pytorch-converted/operator model with supported ops must run.
    assert {f"test_{m}" for m in ("resnet50", "vgg19", "inception_v1", "squeezenet")} <= set(SUPPORTED)
    with capsys.disabled():
        print(f"\nONNX BackendTest suites {', '.join(KINDS)}: {total} models, {len(SUPPORTED)} with supported ops")
        for name, ops in sorted(LEFT_OUT.items()):
            print(f"  left out {name}: unsupported {', '.join(ops)}")
