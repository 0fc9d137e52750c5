"""The federation v2 schema. `python -m resolvers.schema > schema.graphql` exports the SDL."""

from __future__ import annotations

import sys

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from graphql import GraphQLError
from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode, OperationDefinitionNode, SelectionSetNode
from graphql.validation import ValidationContext, ValidationRule
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.extensions.query_depth_limiter import determine_depth, get_fragments, get_queries_and_mutations
from strawberry.federation.schema import FederationAny
from strawberry.types import Info

from api.settings import Limits

from .errors import MaskUnexpectedErrors, PublicError, bad_input, log_errors
from .log import LogQuery
from .mutations import Mutation
from .queries import Query
from .types import SCALARS, Lot, Organization, Site


def _entity_aware_depth_rule(max_depth: int) -> type[ValidationRule]:
    """Strawberry's depth rule, except that a gateway's root `_entities` field does
    not count. A router puts a client's whole Lot selection under
    `_entities(...) { ... on Lot { <selection> } }`; without this the wrapper
    would cost the client one level it never asked for. Raising the limit for
    everybody instead would give direct clients that level too."""

    class EntityAwareDepthRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            document = context.document
            fragments = get_fragments(document.definitions)
            for name, operation in get_queries_and_mutations(document.definitions).items():
                for selection in operation.selection_set.selections:
                    is_entities = isinstance(selection, FieldNode) and selection.name.value == "_entities"
                    determine_depth(
                        node=selection,
                        fragments=fragments,
                        depth_so_far=-1 if is_entities else 0,
                        max_depth=max_depth,
                        context=context,
                        operation_name=name,
                        should_ignore=None,
                    )
            super().__init__(context)

    return EntityAwareDepthRule


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


class DepthLimiter(QueryDepthLimiter):
    """QueryDepthLimiter that leaves room for a federation gateway's `_entities` wrapper."""

    def __init__(self, max_depth: int) -> None:
        AddValidationRules.__init__(self, [_entity_aware_depth_rule(max_depth)])


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
    return OretraceSchema(
        query=merge_types("Query", (Query, LogQuery)),
        mutation=Mutation,
        types=[Lot, Organization, Site],
        federation_version="2.11",
        config=StrawberryConfig(scalar_map=SCALARS),
        extensions=[
            lambda: DepthLimiter(max_depth=limits.max_query_depth),
            lambda: MaxAliasesLimiter(max_alias_count=limits.max_aliases),
            lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
            lambda: AddValidationRules([_costly_fields_rule(COSTLY_ROOT_FIELDS)]),
            MaskUnexpectedErrors,
        ],
    )


def sdl() -> str:
    return build_schema().as_str() + "\n"


if __name__ == "__main__":
    sys.stdout.write(sdl())
