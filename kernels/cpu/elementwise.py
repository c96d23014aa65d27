"""Element-wise ops: activations, unary math, broadcasting binary and variadic ops, comparisons."""

import numpy as np

from kernels.cpu._registry import op


@op("Relu", since=6)
def relu(x):
    return np.maximum(x, x.dtype.type(0))


@op("Add", since=7)
def add(a, b):
    return np.add(a, b)
