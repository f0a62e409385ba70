"""Errors the domain raises; edges map `code` to an HTTP status or gRPC code."""

from __future__ import annotations


class DomainError(Exception):
    """A refused request; `code` is the stable error code clients see."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class ValidationError(DomainError):
    """A request body or parameter violates the schema; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("validation_error", f"{field}: {message}", field=field)
        self.field = field
