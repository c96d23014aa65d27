"""The nine light_* model-zoo graphs shipped in the onnx package (tests/data of onnx itself)."""

import os

import onnx

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
          "squeezenet", "vgg19", "zfnet512"]


def load(name: str) -> onnx.ModelProto:
    """light_<name>.onnx as shipped (its weights are zeros or ones: see engine.onnx_tools.seeded_weights)."""
    return onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))
