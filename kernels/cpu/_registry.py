"""The numpy backend's registry. Op modules register with `@op("Name", since=N)`."""

from kernels.registry import OpRegistry

CPU_OPS = OpRegistry("numpy")
op = CPU_OPS.register
