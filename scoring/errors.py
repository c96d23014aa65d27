"""The errors of the scoring layer. Like every BatchscoreError, each carries one paragraph that names
what is wrong and where (the file, the column, the key); the CLI prints it alone and exits non-zero.

A bad *image* is not an exception: it becomes an error row in the output. These classes are for
problems that stop a job or a shard: a dataset that cannot be read, a job spec that does not
validate, an output directory that does not match its manifest.
"""

from engine.errors import BatchscoreError


class ScoringError(BatchscoreError):
    """Base class of the scoring layer's errors."""


class DatasetError(ScoringError):
    """A dataset that cannot be opened, read or made: no such path, no Parquet files, no image
    column, a column of an unsupported type, files whose schemas disagree, a file that is not
    Parquet; or `make-data` arguments that cannot work."""


class JobError(ScoringError):
    """A job spec (TOML) that does not validate; the message names the section and key."""


class OutputError(ScoringError):
    """An output directory that cannot be written, or whose part files no longer match the manifest."""
