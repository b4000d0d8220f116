"""Domain errors, each with a message a person can act on; the CLI and API translate them once."""

from __future__ import annotations


class LoaError(Exception):
    """Base of every error Loa reports to a person. `code` is stable for API clients."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(LoaError):
    code = "not_found"
    http_status = 404


class Conflict(LoaError):
    """The request is valid but the current state does not allow it (e.g. an illegal transition)."""

    code = "conflict"
    http_status = 409


class IdempotencyKeyInFlight(Conflict):
    """A request with the same Idempotency-Key is still being processed."""

    code = "idempotency_key_in_flight"


class NotAuthenticated(LoaError):
    """No API key, or one that is unknown, revoked or expired."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(LoaError):
    """A valid API key whose role does not allow the request."""

    code = "forbidden"
    http_status = 403


class InvalidInput(LoaError):
    code = "invalid"
    http_status = 422


class SpecError(InvalidInput):
    """A campaign spec is wrong; the message names the file, the wave and the field."""

    code = "invalid_spec"


class IdempotencyKeyReused(InvalidInput):
    """An Idempotency-Key already used for another request (method, path, query or body)."""

    code = "idempotency_key_reused"


class ImportFileError(InvalidInput):
    """A file to import cannot be read at all (single bad rows are reported instead)."""

    code = "invalid_file"


class TooLarge(LoaError):
    """A request body over a configured limit (the limit is named in the message)."""

    code = "too_large"
    http_status = 413


class UnsupportedMediaType(LoaError):
    """A request body sent in a form the endpoint does not read (the message says which it does)."""

    code = "unsupported_media_type"
    http_status = 415


class DatabaseUnavailable(LoaError):
    code = "database_unavailable"
    http_status = 503


class SchemaOutOfDate(LoaError):
    code = "schema_out_of_date"
    http_status = 503


class NotBuilt(LoaError):
    """A part of the product that is designed but not built yet: fails loudly, never pretends."""

    code = "not_built"
    http_status = 501
