"""Domain exceptions. Each message says what went wrong and what to do about it."""

import errno


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


def is_disk_full(err: BaseException | None) -> bool:
    """Whether a full disk (ENOSPC) caused `err`, however deep it was wrapped; safetensors'
    writer reports it only in its message ("... (os error 28)")."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if f"(os error {errno.ENOSPC})" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
