"""The federation v2 schema. `python -m resolvers.schema > schema.graphql` exports the SDL."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from graphql import ExecutionResult, GraphQLError
from graphql.execution.values import get_variable_values
from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode, OperationDefinitionNode, SelectionSetNode
from graphql.validation import ValidationRule
from strawberry.schema.schema import validate_document
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, SchemaExtension
from strawberry.extensions.query_depth_limiter import get_fragments
from strawberry.federation.schema import FederationAny
from strawberry.types import Info
from strawberry.types.graphql import OperationType

from api.settings import Limits

from .errors import MaskUnexpectedErrors, PublicError, bad_input, log_errors
from .log import LogQuery
from .mutations import Mutation
from .identifiers import IDENTIFIER_RULE, IdentifierLiteralRule, identifier_variable_errors, is_identifier
from .query_budget import analyse, operation_of, root_fields
from .queries import Query
from .types import SCALARS, Lot, Organization, Site


#: Root fields whose cost grows with the data, not with the query text, and how many
#: of each one operation may execute: `disclosureBundle` walks a lot's whole ancestry
#: and reads every event behind it, `provenance` does up to 1 + maxDepth round trips.
#: Without a cap, aliases would multiply that work (15 aliases = 15 bundles) in one
#: request. Clients send one request per bundle / provenance walk.
COSTLY_ROOT_FIELDS: dict[str, int] = {"disclosureBundle": 1, "provenance": 1}


def _costly_fields_rule(budget: dict[str, int]) -> type[ValidationRule]:
    """At most budget[name] executions of each costly root field per operation.

    Counted as distinct response keys (alias or name) among the operation's root
    fields, fragments and inline fragments expanded: fields sharing a response key
    are merged by GraphQL and execute once, so `{ ...F ...F }` costs what F costs."""

    class CostlyRootFieldsRule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args) -> None:
            fragments = get_fragments(self.context.document.definitions)
            keys: dict[str, set[str]] = {name: set() for name in budget}
            seen_fragments: set[str] = set()

            def walk(selection_set: SelectionSetNode) -> None:
                for selection in selection_set.selections:
                    if isinstance(selection, FieldNode):
                        name = selection.name.value
                        if name in keys:
                            keys[name].add(selection.alias.value if selection.alias else name)
                    elif isinstance(selection, InlineFragmentNode):
                        walk(selection.selection_set)
                    elif isinstance(selection, FragmentSpreadNode):
                        fragment_name = selection.name.value
                        if fragment_name not in seen_fragments and fragment_name in fragments:
                            seen_fragments.add(fragment_name)  # also stops fragment cycles
                            walk(fragments[fragment_name].selection_set)

            walk(node.selection_set)
            for name, found in keys.items():
                if len(found) > budget[name]:
                    self.report_error(
                        GraphQLError(
                            f"at most {budget[name]} {name} field(s) per operation ({len(found)} found):"
                            " send one request each",
                            [node],
                        )
                    )

    return CostlyRootFieldsRule


#: The costly root fields rule, one class for the process: the validation rules of
#: every request are then the same tuple, so `cached_validation` can key on it.
COSTLY_FIELDS_RULE = _costly_fields_rule(COSTLY_ROOT_FIELDS)

#: How many distinct documents keep their parse (`ParserCache`) and their validation
#: result (`cached_validation`): the SDK and the publisher send a handful of constant
#: documents (one per mutation, variables apart). Bounded (LRU), so unique document
#: texts from a client cannot grow memory; a miss only costs what no cache costs.
DOCUMENT_CACHE_SIZE = 256


@functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def _validate_once(schema, document, rules: tuple) -> tuple[GraphQLError, ...]:
    return tuple(validate_document(schema, document, rules))


def cached_validation(schema, document, rules: tuple) -> list[GraphQLError]:
    """graphql-core's validation of `document` against `schema` with `rules`
    (`strawberry.schema.schema.validate_document`), computed once per distinct
    document. Sound because these rules read the document and the schema only,
    never the variables: everything that depends on the variables (coercion,
    identifier variables, the cost budget) runs on every request, after this.
    Strawberry's own `ValidationCache` is not used: it would set
    `pre_execution_errors` to `[]` on success, and `PreExecutionChecks` (which
    must validate, coerce and budget in one step) would then see a request as
    already checked."""
    return list(_validate_once(schema, document, rules))


#: Root fields served by the transparency log (resolvers.log) or reading it
#: (`disclosureBundle` anchors its bundle): the log keeps its state on the server's
#: event loop, so a heavy operation selecting one executes there, not in a
#: heavy-query process (api.heavy_queries).
MAIN_LOOP_ROOT_FIELDS = frozenset({"logKey", "logCheckpoint", "inclusionProof", "consistencyProof", "disclosureBundle"})

#: Documents up to this many characters are checked on the event loop: their
#: validation costs at most ~3 ms (measured warm on a loaded 2-core machine).
INLINE_CHECK_CHARS = 512
#: ... and so are variables holding no list or object longer than this.
INLINE_CHECK_ITEMS = 100
#: Where longer documents are checked (PreExecutionChecks).
CHECK_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="graphql-check")


def _large_variables(variables: dict | None) -> bool:
    """Variables whose coercion is worth a thread: more than INLINE_CHECK_ITEMS
    of them, or a list or object of more than INLINE_CHECK_ITEMS entries at the
    top (18,000 `_entities` representations). Looks at INLINE_CHECK_ITEMS + 1
    values at most: this runs on the event loop (a body of 58,000 variables
    made it the loop's largest cost: ~0.14 s per request under cProfile)."""
    variables = variables or {}
    if len(variables) > INLINE_CHECK_ITEMS:
        return True
    return any(isinstance(v, list | dict) and len(v) > INLINE_CHECK_ITEMS for v in variables.values())


class PreExecutionChecks(SchemaExtension):
    """Everything a request must pass before a resolver runs, in order:
    graphql-core's validation (with `IdentifierLiteralRule` and the costly
    root fields rule), coercion of the variables (BAD_USER_INPUT, so a bad
    variable is a request error: 400 under graphql-response+json), identifier
    variables, then the limits of `resolvers.query_budget` (depth, aliases,
    cost, `_entities` size) computed with the coerced variables.

    Replaces Strawberry's depth and alias limiters, which walk every fragment
    spread along every path (exponential in the number of fragments) and raise
    KeyError on an unknown fragment: the analysis only ever sees a valid
    document (known fragments, no cycles), and is linear in its size.

    graphql-core's own validation is not linear: OverlappingFieldsCanBeMerged
    compares pairs of fields and of fragments, up to ~0.5 s of CPU for a
    document within the token limit (1,990 `__typename`, or 190 fragments
    spreading each other; bench/abuse.py). So a document longer than
    `INLINE_CHECK_CHARS` is checked on `CHECK_POOL`, two worker threads: the
    event loop keeps answering (/healthz included), and at most two such
    checks compete with it for the GIL at any time. So are large variables
    (their coercion is linear, but 18,000 representations take a while).

    The document-only part, graphql-core's validation, is computed once per
    distinct document (`cached_validation`), and parsing once per distinct
    text (Strawberry's `ParserCache`, installed by `build_schema`); the
    variables' coercion, the identifier checks and the cost budget run on
    every request."""

    def __init__(self, limits: Limits, heavy_slots: asyncio.Semaphore) -> None:
        self.limits = limits
        self.heavy_slots = heavy_slots
        self.cost = 0
        self.root_fields: frozenset[str] = frozenset()

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None and context.graphql_document is not None:
            if len(context.query or "") <= INLINE_CHECK_CHARS and not _large_variables(context.variables):
                context.pre_execution_errors = self._errors(context)
            else:
                loop = asyncio.get_running_loop()
                context.pre_execution_errors = await loop.run_in_executor(CHECK_POOL, self._errors, context)
        yield

    def _errors(self, context) -> list[GraphQLError]:
        schema, document = context.schema._schema, context.graphql_document
        errors = cached_validation(schema, document, tuple(context.validation_rules))
        operation = operation_of(document, context.operation_name)
        if errors or operation is None:
            return errors  # graphql-core reports a missing or ambiguous operation
        coerced = get_variable_values(schema, operation.variable_definitions or (), context.variables or {}, max_errors=10)
        if isinstance(coerced, list):
            return [GraphQLError(e.message, e.nodes, extensions={"code": "BAD_USER_INPUT"}) for e in coerced]
        values = coerced.coerced
        errors = identifier_variable_errors(schema, operation, values)
        if errors:
            return errors
        analysis = analyse(operation, document, values, self.limits)
        self.cost = analysis.cost
        self.root_fields = root_fields(operation, document)
        return analysis.errors

    async def on_execute(self) -> AsyncIterator[None]:
        """Heavy operations (cost >= `heavy_query_cost`) execute at most
        `max_heavy_operations` at a time; the others wait their turn; cheap
        operations never wait. A heavy query executes in one of the context's
        heavy-query processes (`query_worker`, api.heavy_queries), so that building
        and encoding its result never holds this process's GIL (/healthz
        included): its answer comes back encoded, `context.extra["heavy_answer"]`
        (an api.query_process.Answer, which api.app.GraphQLView.process_result
        sends as the response), and the result Strawberry sees is empty.
        Mutations and the log's fields (`MAIN_LOOP_ROOT_FIELDS`) execute here."""
        if self.cost < self.limits.heavy_query_cost:
            yield
            return
        context = self.execution_context
        async with self.heavy_slots:
            processes = getattr(context.context, "query_worker", None)
            if processes is not None and self._offloadable(context):
                context.context.extra["heavy_answer"] = await processes.execute(
                    context.query, context.variables, context.operation_name, context.operation_extensions
                )
                context.result = ExecutionResult(data=None)  # Strawberry then skips its own execution
            yield

    def _offloadable(self, context) -> bool:
        return context.operation_type is OperationType.QUERY and not (self.root_fields & MAIN_LOOP_ROOT_FIELDS)


#: The federation entities (`@key(fields: "id")`) a router may ask `_entities` for.
ENTITY_TYPES: tuple[type, ...] = (Lot, Organization, Site)
ENTITY_TYPE_NAMES = frozenset(t.__name__ for t in ENTITY_TYPES)


def _check_representation(representation: object) -> dict[str, object] | PublicError:
    """A copy of a valid `_entities` representation (`{__typename, id}` of an entity
    type, the id as a string), or the BAD_USER_INPUT error saying what is wrong.

    `_Any` accepts any JSON value; Strawberry's resolver would pop `__typename` from
    it, look the name up in its type map and pass the other keys to
    `resolve_reference` as keyword arguments, so a malformed representation failed
    the whole batch (or its item) with an unexpected, masked error."""
    if not isinstance(representation, dict):
        return bad_input("a representation must be an object with __typename and id")
    type_name = representation.get("__typename")
    if not isinstance(type_name, str) or type_name not in ENTITY_TYPE_NAMES:
        return bad_input(f"__typename must be one of {', '.join(sorted(ENTITY_TYPE_NAMES))}")
    extra = sorted(str(k) for k in representation if k not in ("__typename", "id"))
    if extra:
        return bad_input(f"unexpected representation field(s) for {type_name}: {', '.join(extra)[:200]}")
    entity_id = representation.get("id")
    if isinstance(entity_id, int) and not isinstance(entity_id, bool):  # an ID input may be an int
        entity_id = str(entity_id)
    if not isinstance(entity_id, str):
        return bad_input(f"a {type_name} representation needs an id (string)")
    if not is_identifier(entity_id):
        return bad_input(f"the id of a {type_name} representation is {IDENTIFIER_RULE}")
    return {"__typename": type_name, "id": entity_id}


class OretraceSchema(strawberry.federation.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context=None) -> None:
        log_errors(errors)

    def entities_resolver(self, info: Info, representations: list[FederationAny]) -> list[FederationAny]:
        """Strawberry's `_entities` resolver, behind a check of every representation:
        a malformed one becomes a typed BAD_USER_INPUT error at its index (its entry
        null), and the others still resolve, in order."""
        checked = [_check_representation(r) for r in representations]
        valid = [r for r in checked if not isinstance(r, PublicError)]
        resolved = iter(super().entities_resolver(info, valid) if valid else ())
        return [r if isinstance(r, PublicError) else next(resolved) for r in checked]  # type: ignore[misc]


def build_schema(limits: Limits | None = None) -> OretraceSchema:
    limits = limits or Limits()
    heavy_slots = asyncio.Semaphore(limits.max_heavy_operations)  # shared by the schema's requests
    return OretraceSchema(
        query=merge_types("Query", (Query, LogQuery)),
        mutation=Mutation,
        types=[Lot, Organization, Site],
        federation_version="2.11",
        config=StrawberryConfig(scalar_map=SCALARS),
        extensions=[
            lambda: PreExecutionChecks(limits, heavy_slots),
            lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
            lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),  # after MaxTokensLimiter: it sets the parse options
            lambda: AddValidationRules([IdentifierLiteralRule, COSTLY_FIELDS_RULE]),
            MaskUnexpectedErrors,
        ],
    )


def sdl() -> str:
    return build_schema().as_str() + "\n"


if __name__ == "__main__":
    sys.stdout.write(sdl())
