"""The one exception tree of secadero.

Families are grouped by what the caller does next, not by where the error
happened: a ``ConfigError`` stops a process at start-up, a ``ProtocolError``
rejects one message and carries on, a ``SensorError`` leaves a reading
``null``, a ``StorageError`` says whether to retry.
"""

from __future__ import annotations


class SecaderoError(Exception):
    """Root of every error secadero raises on purpose."""


class ConfigError(SecaderoError, ValueError):
    """Settings are missing or wrong; the process must not start.

    ``problems`` holds one ``file: key: reason`` line per problem so a
    technician can fix them all in one pass.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ProtocolError(SecaderoError, ValueError):
    """A topic or payload does not follow the wire contract (docs/protocol.md).

    ``reason`` is a short stable code used as a counter label
    (``invalid_json``, ``out_of_range`` ...); ``field`` names the offending
    key when there is one; the message is for people.
    """

    def __init__(self, reason: str, message: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class SensorError(SecaderoError):
    """A sensor did not give a reading."""


class SensorReadError(SensorError):
    """A transient read failure (bad checksum, short frame): try again later."""


class SensorNotConnected(SensorError):
    """The sensor does not answer at all: wiring, power or a dead part."""


class StorageError(SecaderoError):
    """Writing to or reading from a store failed.

    ``retryable`` tells the caller whether the same write may succeed later
    (database down, timeout) or never will (a rejected point).
    """

    retryable: bool = True


class RetryableStorageError(StorageError):
    retryable = True


class PermanentStorageError(StorageError):
    retryable = False
