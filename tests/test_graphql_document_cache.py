"""Parsing and graphql-core validation are cached per document (issue 11); the
checks that depend on the variables still run on every request: identifier
variables, coercion and the cost budget (resolvers.schema.PreExecutionChecks).

Requests run through `schema.execute` without a context: every check here
happens before a resolver runs; the requests that pass them end in the
resolver's missing context (a masked INTERNAL_SERVER_ERROR), which is filtered out."""

from __future__ import annotations

import asyncio

import pytest

from api.settings import Limits
from resolvers.schema import _validate_once, build_schema

LOT = "query($id: ID!) { lot(id: $id) { id } }"
PAGE = "query($n: Int) { lots(first: $n) { edges { node { id claims(first: $n) { id } } } } }"


@pytest.fixture(scope="module")
def schema():
    return build_schema(Limits(max_query_cost=500, max_page_size=100))


def pre_execution_codes(schema, query: str, variables: dict | None = None) -> list[str]:
    """The codes of the errors raised before execution."""
    result = asyncio.run(schema.execute(query, variable_values=variables))
    found = [(e.extensions or {}).get("code") for e in result.errors or []]
    return [code for code in found if code != "INTERNAL_SERVER_ERROR"]


@pytest.mark.parametrize("bad_id", ["lot 1", "x" * 200, "ünïcode", ""])
def test_identifier_variables_are_checked_on_every_request_of_a_cached_document(schema, bad_id):
    pre_execution_codes(schema, LOT, {"id": "lot_1"})
    before = _validate_once.cache_info().hits
    assert pre_execution_codes(schema, LOT, {"id": bad_id}) == ["BAD_USER_INPUT"]
    assert _validate_once.cache_info().hits > before  # the validation came from the cache
    assert pre_execution_codes(schema, LOT, {"id": "lot_2"}) == []


@pytest.mark.parametrize("wide", [30, 50, 100])
def test_the_cost_budget_is_computed_on_every_request_of_a_cached_document(schema, wide):
    assert pre_execution_codes(schema, PAGE, {"n": 2}) == []
    assert pre_execution_codes(schema, PAGE, {"n": wide}) == ["QUERY_TOO_COSTLY"]
    assert pre_execution_codes(schema, PAGE, {"n": 2}) == []


@pytest.mark.parametrize("variables", [{"id": 1.5}, {"id": None}, {"id": ["a"]}, {}])
def test_variable_coercion_runs_on_every_request_of_a_cached_document(schema, variables):
    pre_execution_codes(schema, LOT, {"id": "lot_1"})
    assert pre_execution_codes(schema, LOT, variables) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    "query",
    [
        '{ lot(id: "a") { nope } }',
        '{ a: disclosureBundle(claimId: "c") { format } b: disclosureBundle(claimId: "d") { format } }',
        '{ lot(id: "not an id") { id } }',
    ],
)
def test_invalid_documents_stay_invalid_when_cached(schema, query):
    first = asyncio.run(schema.execute(query)).errors
    again = asyncio.run(schema.execute(query)).errors
    assert first and again and [e.message for e in first] == [e.message for e in again]
