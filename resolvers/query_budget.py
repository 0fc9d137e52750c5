"""The cost of a GraphQL operation, known before it executes: depth, aliases and
a cost budget, in one pass that is linear in the size of the document.

Why one pass with memoised fragments: a spread is an edge in a DAG of
fragments, so walking every spread along every path (what Strawberry's depth
and alias limiters do) is exponential: `query { ...F0 } fragment F0 on Query
{ ...F1 ...F1 } ... fragment F20 on Query { __typename }` (824 bytes) kept the
event loop busy for seconds. Here each fragment is summarised once
(`Summary`), and a spread reuses its fragment's summary; big integers hold
the products, so a document whose expanded size is astronomical is measured
exactly, in time linear in its text, and refused.

Semantics (docs/api.md, "Limits"):

* **depth**: the deepest field level, root fields at level 0, leaves
  included; introspection fields (`__schema`, `__typename`, ...) do not
  count; a router's root `_entities` field does not add a level (its
  selection counts as root fields). Same numbers as Strawberry's
  `QueryDepthLimiter`.
* **aliases**: aliased fields in the operation, fragments expanded.
* **cost**: `cost(field) = multiplier * (weight + sum(cost(child)))`, where
  weight is 1 for a field with a selection set (an object to build, often a
  loader call) and `LEAF_WEIGHTS` for the root leaves that read the
  database; the multiplier of a list field is its `first` argument
  (connections and list relations, clamped to the page limit the resolver
  enforces), a declared bound (`DECLARED_BOUNDS`: a transformation has at
  most 32 inputs), the number of `_entities` representations, or
  `Limits.max_provenance_nodes` for a provenance's nodes. `provenance` and
  `disclosureBundle` weigh 1 + their depth cap (round trips of the walk).
  Fields sharing a response key are summed (GraphQL merges them, so the
  figure is an upper bound); a fragment spread twice in one selection set is
  counted once, as graphql-core's field collection executes it once.

The document must have passed graphql-core's validation first (known
fragments, no cycles, known fields): `analyse` relies on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
)

from api.settings import Limits

#: Default `first` of list relations and connections (resolvers use the same).
DEFAULT_PAGE = 20
#: Lists whose length the protocol bounds (ledger.models.Transform.inputs: at most 32).
DECLARED_BOUNDS: dict[str, int] = {"parents": 32}
#: Connections: `first` defaults to DEFAULT_PAGE.
CONNECTIONS = frozenset({"lots", "organizations", "sites", "sealedOpenings"})
#: List relations paged by `first` (resolvers.types.relation_page): default the page limit.
RELATIONS = frozenset({"claims", "attestations"})
#: List fields whose items hold scalars only (bounded by the data, never multiplied
#: by the query), or a connection's `edges` (the connection carries the multiplier).
#: Merkle proofs (`hashes`, `consistencyProof`) hold at most 2*log2(tree size) hashes.
UNMULTIPLIED_LISTS = frozenset(
    {"edges", "commitments", "signingKeys", "roles", "lotIds", "parentIds", "hashes", "consistencyProof", "registryEvents"}
)
#: Fields without a selection set that still read the database (one query each).
LEAF_WEIGHTS: dict[str, int] = {"event": 1, "consistencyProof": 1, "logCheckpoint": 1, "registryEvents": 1}
#: Fields whose weight is 1 + a provenance depth (one round trip per level).
DEPTH_WEIGHTED = frozenset({"provenance", "disclosureBundle"})
ENTITIES = "_entities"


class QueryTooCostly(GraphQLError):
    """The operation would cost more than the server allows (`extensions.code`
    QUERY_TOO_COSTLY, with `cost` and `budget`)."""

    def __init__(self, message: str, *, cost: int, budget: int, node: Any = None) -> None:
        super().__init__(
            message, node, extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "budget": budget}
        )


@dataclass(frozen=True)
class Summary:
    """What a selection set costs: `height` = deepest field level below it
    (0 = only leaves), `aliases` and `cost` with fragments expanded."""

    height: int = -1
    aliases: int = 0
    cost: int = 0

    def plus(self, other: Summary) -> Summary:
        return Summary(max(self.height, other.height), self.aliases + other.aliases, self.cost + other.cost)


EMPTY = Summary()


@dataclass(frozen=True)
class Analysis:
    """`errors`: the limit errors (empty: within every limit); `cost`: the operation's cost."""

    errors: list[GraphQLError]
    cost: int


class _Analyser:
    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any],
                 limits: Limits) -> None:  # fmt: skip
        self.fragments = fragments
        self.variables = variables
        self.limits = limits
        self.memo: dict[str, Summary] = {}
        self.entities: list[tuple[FieldNode, int]] = []

    # ------------------------------------------------------------------ arguments

    def _value(self, node: ValueNode | None) -> Any:
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        if isinstance(node, IntValueNode):
            return int(node.value)
        if isinstance(node, ListValueNode):
            return node.values
        return None

    def _argument(self, field: FieldNode, name: str) -> Any:
        for argument in field.arguments or ():
            if argument.name.value == name:
                return self._value(argument.value)
        return None

    def _first(self, field: FieldNode, default: int) -> int:
        first = self._argument(field, "first")
        limit = self.limits.max_page_size
        if not isinstance(first, int) or isinstance(first, bool):
            return default if first is None else limit  # a malformed value fails coercion; count the worst
        return min(max(first, 0), limit)  # the resolver refuses values outside 1..limit

    def _multiplier(self, field: FieldNode, name: str) -> int:
        if name in CONNECTIONS:
            return self._first(field, DEFAULT_PAGE)
        if name in RELATIONS:
            return self._first(field, self.limits.max_page_size)
        if name in DECLARED_BOUNDS:
            return DECLARED_BOUNDS[name]
        if name == "nodes":  # Provenance.nodes
            return self.limits.max_provenance_nodes
        if name == ENTITIES:
            representations = self._argument(field, "representations")
            count = len(representations) if isinstance(representations, list | tuple) else 1
            self.entities.append((field, count))
            return count
        return 1

    def _weight(self, field: FieldNode, name: str) -> int:
        if name in DEPTH_WEIGHTED:
            depth = self._argument(field, "maxDepth") if name == "provenance" else None
            cap = self.limits.max_provenance_depth
            depth = depth if isinstance(depth, int) and not isinstance(depth, bool) and 0 <= depth <= cap else cap
            return 1 + depth
        if field.selection_set is not None:
            return 1
        return LEAF_WEIGHTS.get(name, 0)

    # ------------------------------------------------------------------ walking

    def fragment(self, name: str) -> Summary:
        summary = self.memo.get(name)
        if summary is None:
            summary = self.selection_set(self.fragments[name].selection_set)
            self.memo[name] = summary
        return summary

    def selection_set(self, selection_set: SelectionSetNode, visited: set[str] | None = None) -> Summary:
        """Summary of a selection set; `visited` = spreads already collected in it
        (inline fragments share their parent's collection, as in graphql-core)."""
        visited = set() if visited is None else visited
        total = EMPTY
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total = total.plus(self.field(selection))
            elif isinstance(selection, InlineFragmentNode):
                total = total.plus(self.selection_set(selection.selection_set, visited))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in visited:
                    visited.add(name)
                    total = total.plus(self.fragment(name))
        return total

    def field(self, field: FieldNode) -> Summary:
        name = field.name.value
        alias = 1 if field.alias is not None else 0
        if name.startswith("__"):  # introspection: no depth, no cost (schema-sized)
            inner = self.selection_set(field.selection_set) if field.selection_set else EMPTY
            return Summary(0, alias + inner.aliases, 0)
        children = self.selection_set(field.selection_set) if field.selection_set else EMPTY
        multiplier = 1 if name in UNMULTIPLIED_LISTS else self._multiplier(field, name)
        cost = multiplier * (self._weight(field, name) + children.cost)
        if field.selection_set is None:
            height = 0
        elif name == ENTITIES:
            height = max(children.height, 0)  # the router's wrapper adds no level
        else:
            height = 1 + max(children.height, 0)
        return Summary(height, alias + children.aliases, cost)


def operation_of(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == operation_name), None)


def root_fields(operation: OperationDefinitionNode, document: DocumentNode) -> frozenset[str]:
    """Names of the fields `operation` selects at its root, fragments and inline
    fragments expanded (each fragment visited once). The document must be valid."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    names: set[str] = set()
    seen: set[str] = set()
    todo = [operation.selection_set]
    while todo:
        for selection in todo.pop().selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                todo.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                seen.add(selection.name.value)
                todo.append(fragments[selection.name.value].selection_set)
    return frozenset(names)


def analyse(operation: OperationDefinitionNode, document: DocumentNode, variables: Mapping[str, Any],
            limits: Limits) -> Analysis:  # fmt: skip
    """The limit errors and the cost of `operation`, given its coerced
    `variables` (defaults applied). Depth and aliases give
    GRAPHQL_VALIDATION_FAILED errors (the messages of Strawberry's limiters);
    cost and `_entities` size give `QueryTooCostly`. Linear in the size of
    `document`, which must have passed validation."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    analyser = _Analyser(fragments, variables, limits)
    summary = analyser.selection_set(operation.selection_set)
    errors: list[GraphQLError] = []
    name = operation.name.value if operation.name else "anonymous"
    if summary.height > limits.max_query_depth:
        errors.append(GraphQLError(f"'{name}' exceeds maximum operation depth of {limits.max_query_depth}", operation))
    if summary.aliases > limits.max_aliases:
        errors.append(GraphQLError(f"{summary.aliases} aliases found. Allowed: {limits.max_aliases}", operation))
    for field, count in analyser.entities:
        if count > limits.max_entities:
            errors.append(
                QueryTooCostly(
                    f"_entities takes at most {limits.max_entities} representations per request (got {count})",
                    cost=count, budget=limits.max_entities, node=field,
                )
            )
    if summary.cost > limits.max_query_cost:
        errors.append(
            QueryTooCostly(
                f"operation cost {_shown(summary.cost)} exceeds the budget of {limits.max_query_cost}: "
                "ask for smaller pages (first), fewer nested lists, or split the request",
                cost=min(summary.cost, 2**63 - 1), budget=limits.max_query_cost, node=operation,
            )
        )
    return Analysis(errors, summary.cost)


def _shown(n: int) -> str:
    """An integer for a message: exact below 2^63, else its binary order of
    magnitude (no decimal conversion of a huge number)."""
    return str(n) if n < 2**63 else f"over 2^{n.bit_length() - 1}"
