"""GraphQL errors: typed and readable for expected failures, masked for bugs.

* `PublicError` (message + `extensions.code`) is shown as is: ledger
  rejections (`extensions.code` is the `ledger.errors.Code`), bad arguments
  (`BAD_USER_INPUT`), missing things (`NOT_FOUND`).
* Errors raised by graphql-core itself (syntax, validation, the depth / alias /
  token limiters) carry no `original_error` and are shown as is.
* Anything else is a bug: logged with its traceback, and replaced by
  "Internal server error" (`INTERNAL_SERVER_ERROR`) so no internals leak.
  Strawberry's own `MaskErrors` is not used: with default settings it would
  also hide the limiters' messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from api.store import is_infrastructure_fault
from ledger.errors import Rejection

log = logging.getLogger("oretrace.graphql")

INTERNAL_MESSAGE = "Internal server error"


class PublicError(Exception):
    """An expected failure whose message and code the client may see."""

    def __init__(self, message: str, code: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": code, **extra}

    def __str__(self) -> str:
        return self.message


def bad_input(message: str, **extra: Any) -> PublicError:
    return PublicError(message, "BAD_USER_INPUT", **extra)


def from_rejection(rejection: Rejection) -> PublicError:
    return PublicError(rejection.message, rejection.code.value)


@contextmanager
def rejections_as_errors() -> Iterator[None]:
    """Turn a ledger Rejection into a typed GraphQL error."""
    try:
        yield
    except Rejection as rejection:
        raise from_rejection(rejection) from None


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, (PublicError, GraphQLError))


def mask(error: GraphQLError) -> GraphQLError:
    return GraphQLError(
        INTERNAL_MESSAGE,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={"code": "INTERNAL_SERVER_ERROR"},
    )


def log_errors(errors: list[GraphQLError]) -> None:
    """Log unexpected errors with their traceback; expected ones at debug level.
    An infrastructure fault (the database down or past the request's deadline) is
    not a bug: api.app.DatabaseFaults types it SERVICE_UNAVAILABLE and logs one
    warning line per operation, so it gets no traceback here."""
    for error in errors:
        if is_unexpected(error) and not is_infrastructure_fault(error.original_error):
            original = error.original_error
            log.error(
                "unexpected error at %s: %r",
                ".".join(str(p) for p in error.path or ()) or "-",
                original,
                exc_info=(type(original), original, original.__traceback__),
            )
        else:
            log.debug("graphql error: %s", error.message)


class MaskUnexpectedErrors(SchemaExtension):
    """Replace unexpected errors by a generic message; keep typed and limiter errors."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [mask(e) if is_unexpected(e) else e for e in errors]
