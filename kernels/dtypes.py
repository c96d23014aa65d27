"""Element types: ONNX's TensorProto enum -> numpy dtypes, without importing onnx.

Narrow float and integer types (bfloat16, float8, int4, ...) come from ml_dtypes, which registers
them with numpy; it is imported only when such a type is asked for.
"""

from __future__ import annotations

import numpy as np

# TensorProto.DataType values (stable across ONNX releases).
_NUMPY = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "object", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    14: "complex64", 15: "complex128",
}
_ML_DTYPES = {
    16: "bfloat16", 17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2",
    20: "float8_e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4_e2m1fn", 24: "float8_e8m0fnu",
    25: "uint2", 26: "int2",
}


def onnx_dtype(code: int) -> np.dtype:
    """The numpy dtype for an ONNX element type code ("to" of Cast, "dtype" of RandomNormal...)."""
    if code in _NUMPY:
        return np.dtype(_NUMPY[code])
    if code in _ML_DTYPES:
        import ml_dtypes  # noqa: F401  (registers the narrow types with numpy)

        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[code]))
    raise ValueError(f"unknown ONNX element type {code}")


def resolve(name: str) -> np.dtype:
    """A dtype from its numpy name, as plan files store it ("float32", "float8_e4m3fn")."""
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
