"""Identifier arguments: every `ID` a client sends must look like an oretrace
identifier (ledger.models.Ident) before any resolver sees it.

An over-long, empty or oddly-encoded id can name nothing in the ledger; left
unchecked it costs a database round trip, or fails while being encoded for
MongoDB (a lone UTF-16 surrogate), which surfaced as INTERNAL_SERVER_ERROR.
GraphQL's built-in `ID` scalar cannot be redefined, so the check runs on the
request instead:

* literals in the document: `IdentifierLiteralRule`, a validation rule
  (GRAPHQL_VALIDATION_FAILED);
* variables declared with an `ID` type (the only ones GraphQL lets reach an
  `ID` argument): `identifier_variable_errors` after coercion
  (BAD_USER_INPUT);
* `_entities` representations (`_Any`): resolvers.schema checks their `id`
  with `is_identifier`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLID,
    IntValueNode,
    OperationDefinitionNode,
    StringValueNode,
    get_named_type,
)
from graphql.utilities import type_from_ast
from graphql.validation import ValidationRule

#: ledger.models.Ident: lots, claims, organisations, sites, attestations, events.
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
IDENTIFIER_RULE = "not an oretrace identifier (1 to 64 characters from A-Z a-z 0-9 _ . : -)"


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


class IdentifierLiteralRule(ValidationRule):
    """A string or integer literal in an `ID` position must be an identifier."""

    def _check(self, node: StringValueNode | IntValueNode) -> None:
        input_type = self.context.get_input_type()
        if input_type is not None and get_named_type(input_type) is GraphQLID and not is_identifier(node.value):
            self.report_error(GraphQLError(f"ID literal: {IDENTIFIER_RULE}", node))

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        self._check(node)

    def enter_int_value(self, node: IntValueNode, *_args: Any) -> None:
        self._check(node)


def identifier_variable_errors(schema: Any, operation: OperationDefinitionNode,
                               variables: Mapping[str, Any]) -> list[GraphQLError]:  # fmt: skip
    """BAD_USER_INPUT errors for coerced `variables` of an `ID` type (or list of
    IDs) that are not identifiers; the message names the variable, never
    echoes the value."""
    errors: list[GraphQLError] = []
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        declared = type_from_ast(schema, definition.type)
        if declared is None or get_named_type(declared) is not GraphQLID or variables.get(name) is None:
            continue
        value = variables[name]
        items = value if isinstance(value, list) else [value]
        if not all(item is None or is_identifier(item) for item in items):
            errors.append(
                GraphQLError(f"Variable '${name}': {IDENTIFIER_RULE}", definition, extensions={"code": "BAD_USER_INPUT"})
            )
    return errors
