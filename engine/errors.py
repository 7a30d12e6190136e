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
