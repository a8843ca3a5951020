"""Domain errors. Each API face maps these to its own error body in one handler."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every expected failure; never becomes a 500."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(DomainError):
    """The input is malformed or breaks a rule (400)."""

    status_code = 400


class Unauthorized(DomainError):
    """Missing or wrong credentials (401)."""

    status_code = 401


class Forbidden(DomainError):
    """Authenticated, but the role does not allow it (403)."""

    status_code = 403


class NotFound(DomainError):
    """Absent, or belongs to another organization (404): existence does not leak."""

    status_code = 404


class Conflict(DomainError):
    """The request clashes with the current state (409)."""

    status_code = 409


class PayloadTooLarge(DomainError):
    """A request body over the configured limit (413)."""

    status_code = 413


class Unavailable(DomainError):
    """A dependency (database, broker) is down (503); the client may retry."""

    status_code = 503
