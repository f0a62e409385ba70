"""The one error type of control's domain and use cases."""

from __future__ import annotations


class ControlError(Exception):
    """A refusal with a stable `code`; the edges map codes to HTTP / gRPC statuses.

    `extra` holds machine-readable details added to the error body (e.g. `topic`
    for `forbidden_topic`, `minimum_version` for `upgrade_required`).
    """

    def __init__(self, code: str, message: str, **extra: str | int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra
