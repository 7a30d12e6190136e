"""streamrec's own exception tree; adapters translate library errors into these."""


class StreamrecError(Exception):
    """Base class of every error streamrec raises on purpose."""


class InvalidEvent(StreamrecError, ValueError):
    """A record that is not a valid event; the message is the reason written to the DLQ."""


class ConfigurationError(StreamrecError):
    """Settings that cannot work (missing servers, bad values)."""


class StateStoreError(StreamrecError):
    """The state backend (Redis) failed or is unreachable."""


class WatermarkConflict(StateStoreError):
    """Another writer advanced a partition's watermark first: this worker's view is stale."""


class BrokerError(StreamrecError):
    """The Kafka broker failed or is unreachable."""


class StackError(StreamrecError):
    """The embedded stack could not be started, found or stopped."""


class LoaderError(StreamrecError):
    """An event log file could not be read in the requested format."""


class ModelError(StreamrecError):
    """Training failed, or a saved embedding artefact is missing, corrupt or inconsistent."""


class VectorIndexError(StreamrecError):
    """An ANN index was misused (wrong dimension, bad k) or failed; base of the index errors."""


class IndexBuildError(VectorIndexError):
    """Vectors or ids given to an index cannot be indexed (shape, dtype, duplicates, too few to train)."""


class IndexLoadError(VectorIndexError):
    """A saved index directory is missing, corrupt or inconsistent."""


class ScorerError(StreamrecError):
    """A worker's scoring process exited or stopped answering; the worker starts another."""
