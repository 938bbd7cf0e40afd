"""The project's exception hierarchy: one base class, a few kinds callers act on."""


class ScenebenchError(Exception):
    """Base class of every error scenebench raises on purpose."""


class ConfigError(ScenebenchError):
    """A setting or flag has a wrong value; raised at start, before any work."""


class DatasetError(ScenebenchError):
    """The input data cannot be used as given (no classes, an empty class, ...)."""


class StoreError(ScenebenchError):
    """The artifact store failed permanently (missing object, denied, bad checksum, ...)."""


class NotFoundError(StoreError):
    """An object the caller needs is not in the store."""


class ChecksumError(StoreError):
    """A downloaded or stored object does not match its recorded sha256."""


class TransientStoreError(StoreError):
    """The store failed in a way that may succeed if retried."""


class ConversionError(ScenebenchError):
    """A model could not be converted to the requested TFLite format."""


class RunnerError(ScenebenchError):
    """The device-farm runner refused or failed a request."""


class StepFailed(ScenebenchError):
    """A pipeline step failed; earlier artifacts are kept and a re-run resumes."""
