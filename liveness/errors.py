"""Named failures, so callers catch a family instead of a message string."""


class LivenessError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(LivenessError):
    """The configuration file or environment is invalid; the message names file and field."""


class MessageError(LivenessError):
    """A stream message does not follow the contract; the message says what is wrong."""


class PoisonMessageError(MessageError):
    """A message that can never be processed (undecodable crop, NaN ratios): dead-letter it."""


class CorruptStateError(LivenessError):
    """State read back from Redis does not parse or breaks an invariant (an older schema, a partial
    write, a hostile client): reset it, never read it as evidence."""


class ModelError(LivenessError):
    """A model file is missing, corrupt, or does not have the expected inputs and outputs."""


class SourceError(LivenessError):
    """A camera source cannot be opened or read."""


class NameTakenError(LivenessError):
    """Another live process beats under this process's name (a second ingest of one camera): two of
    them would publish everything twice, and their heartbeats would look like one."""
