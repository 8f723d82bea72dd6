"""Domain exceptions. Each message says what went wrong and what to do about it."""


class XlinfluenceError(Exception):
    """Base class: an error the user can fix, shown without a traceback by the CLI."""


class DataError(XlinfluenceError):
    """Input data is missing, malformed, or does not fit the requested selection."""


class RunLookupError(XlinfluenceError):
    """An upstream MLflow run is unknown, unfinished, or of the wrong kind."""


class ArtifactError(XlinfluenceError):
    """An artifact is missing, corrupt, or inconsistent with its manifest."""


class ConfigError(XlinfluenceError):
    """A parameter value is invalid."""


class DiskFullError(XlinfluenceError):
    """A disk filled up (ENOSPC) while writing; says where, and how much was needed."""
