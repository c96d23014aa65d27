"""(being written)"""
from kernels.cpu._registry import op  # noqa: F401
