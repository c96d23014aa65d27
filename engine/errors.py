"""The errors users see. Each carries a one-paragraph message that names what is wrong and where;
the CLI prints the message alone (no traceback) and exits non-zero."""


class BatchscoreError(Exception):
    """Base class: anything the user can fix by changing their input."""


class ModelImportError(BatchscoreError):
    """The model file cannot be read or is not a model this engine can import."""


class UnsupportedOpsError(ModelImportError):
    """The model uses operators without a kernel; the message lists every one."""


class BuildError(BatchscoreError):
    """The build failed: a pass broke the graph, a shape rule was wrong, a layer failed its probe."""


class PlanFormatError(BatchscoreError):
    """A plan file that is truncated, corrupted, foreign or from a newer format."""


class InputError(BatchscoreError):
    """Inputs handed to a context that do not match the plan's bindings."""


class LayerError(BatchscoreError):
    """A layer's kernel failed at run time; the message names the layer, op and input shapes."""
