"""The API under abuse (issue 8): every class of expensive or malformed request
gets a typed error, and the server keeps answering /healthz while such
requests are in flight (each test sends them concurrently with health probes
over TCP to a real uvicorn)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import graphql
import httpx
import pytest

from api.settings import Limits
from conftest import build_chain
from resolvers.query_budget import (
    CONNECTIONS,
    DECLARED_BOUNDS,
    ENTITIES,
    RELATIONS,
    UNMULTIPLIED_LISTS,
    analyse,
)
from resolvers.schema import build_schema

GR = "application/graphql-response+json"


@pytest.fixture(scope="module")
async def chain(world, publish):
    return await build_chain(world, publish)


@pytest.fixture(scope="module")
async def http(live_server: str):
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as c:
        yield c


async def while_healthy(http: httpx.AsyncClient, requests: list[Any], probes: int = 4) -> list[httpx.Response]:
    """Send `requests` (coroutines) concurrently with /healthz probes; every
    probe must answer 200. Returns the responses to `requests`, in order."""
    results = await asyncio.gather(*requests, *(http.get("/healthz") for _ in range(probes)))
    for probe in results[len(requests) :]:
        assert probe.status_code == 200 and probe.json() == {"status": "ok"}, probe.text
    return list(results[: len(requests)])


def post(http: httpx.AsyncClient, query: str, variables: dict | None = None, **kw: Any):
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return http.post("/graphql", json=body, **kw)


def codes(response: httpx.Response) -> list[str]:
    return [(e.get("extensions") or {}).get("code") for e in response.json().get("errors") or ()]


# --------------------------------------------------------------------------- documents


def chain_fan_out(n: int, leaf: str = "__typename") -> str:
    """F0 spreads F1 twice, F1 spreads F2 twice, ...: 2^n paths to the leaf."""
    fragments = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n))
    return f"query {{ ...F0 }} {fragments} fragment F{n} on Query {{ {leaf} }}"


def diamond_fan_out(n: int, leaf: str = "__typename") -> str:
    """A{i} and B{i} both spread A{i+1} and B{i+1}: 2^(n+1) distinct paths, no spread repeated in a selection set."""
    fragments = " ".join(
        f"fragment A{i} on Query {{ ...A{i + 1} ...B{i + 1} }} fragment B{i} on Query {{ ...A{i + 1} ...B{i + 1} }}"
        for i in range(n)
    )
    return f"query {{ ...A0 ...B0 }} {fragments} fragment A{n} on Query {{ {leaf} }} fragment B{n} on Query {{ {leaf} }}"


def deep_lot_selection(levels: int) -> str:
    """`site { attestations(first: 1) { site { ... id } } }`: `levels` field levels, one item per list."""
    inner = "id"
    for level in reversed(range(levels - 1)):
        inner = f"site {{ {inner} }}" if level % 2 == 0 else f"attestations(first: 1) {{ {inner} }}"
    return inner


def nest(field: str, levels: int, leaf: str = "id") -> str:
    inner = leaf
    for _ in range(levels):
        inner = f"{field} {{ {inner} }}"
    return inner


# --------------------------------------------------------------------------- 1. fragment fan-out


@pytest.mark.parametrize(
    "document",
    [chain_fan_out(20), chain_fan_out(60), diamond_fan_out(20), diamond_fan_out(60)],
    ids=["chain20", "chain60", "diamond20", "diamond60"],
)
async def test_fragment_fan_out_of_cheap_fields_answers(http, document: str) -> None:
    """The exponential number of paths costs nothing more than the text: each fragment is analysed once."""
    (response,) = await while_healthy(http, [post(http, document)])
    assert response.status_code == 200 and response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("document", "code", "message"),
    [
        (diamond_fan_out(40, 'lot(id: "x") { id }'), "QUERY_TOO_COSTLY", f"operation cost {2**41} exceeds"),
        (diamond_fan_out(90, 'lot(id: "x") { id }'), "QUERY_TOO_COSTLY", "operation cost over 2^91 exceeds"),
        (diamond_fan_out(25, 'lots(first: 1) { edges { node { id } } }'), "QUERY_TOO_COSTLY", "exceeds the budget"),
        (diamond_fan_out(40, "a: __typename"), "GRAPHQL_VALIDATION_FAILED", "aliases found. Allowed"),
        (diamond_fan_out(13, "b: __typename"), "GRAPHQL_VALIDATION_FAILED", "16384 aliases found. Allowed: 15"),
        (diamond_fan_out(30, f'lot(id: "x") {{ {deep_lot_selection(13)} }}'), "GRAPHQL_VALIDATION_FAILED", "maximum operation depth"),
    ],
    ids=["cost-lot", "cost-huge", "cost-connection", "aliases-40", "aliases-exact", "depth"],
)
async def test_fragment_fan_out_is_measured_and_refused(http, document: str, code: str, message: str) -> None:
    (response,) = await while_healthy(http, [post(http, document, headers={"accept": GR})])
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert code in codes(response) and any(message in e["message"] for e in errors), errors


# --------------------------------------------------------------------------- 6. unknown fragments


@pytest.mark.parametrize(
    "document",
    [
        "{ ...Missing }",
        '{ lot(id: "x") { ...Missing } }',
        "query { ...A } fragment A on Query { ...Missing }",
        '{ lot(id: "x") { ... on Lot { ...Missing } } }',
        "query Q { ...A } fragment A on Query { __typename ...Missing }",
    ],
)
async def test_unknown_fragment_is_a_validation_error(http, document: str, caplog) -> None:
    (response,) = await while_healthy(http, [post(http, document)])
    assert response.status_code == 200
    body = response.json()
    assert codes(response) == ["GRAPHQL_VALIDATION_FAILED"], body
    assert body["errors"][0]["message"] == "Unknown fragment 'Missing'."
    assert "Traceback" not in caplog.text and "KeyError" not in caplog.text


# --------------------------------------------------------------------------- 2. cost budget


COSTLY = [
    # the DAG walk: 100 lots x 32^4 parents
    ("{ lots(first: 100) { edges { node { " + nest("parents", 4) + " } } } }", None),
    # a page size given in a variable
    ("query($n: Int!) { lots(first: $n) { edges { node { " + nest("parents", 3) + " } } } }", {"n": 100}),
    # a variable's default counts when the variable is absent
    ("query($n: Int = 100) { lots(first: $n) { edges { node { claims { id } parents { id } } } } }", None),
    # site -> attestations -> site -> ... (each level up to the page limit)
    ('{ site(id: "s") { ' + nest("attestations { site", 3, "id" + " }" * 3) + " } }", None),
    # provenance: every node's parents' parents
    ('{ provenance(lotId: "x") { nodes { ' + nest("parents", 2) + " } } }", None),
    # connections inside connections of organisations' ... via sites
    ("{ sites(first: 100) { edges { node { attestations { auditor { id } site { operator { id } } } } } } }", None),
]


@pytest.mark.parametrize(("document", "variables"), COSTLY, ids=[f"costly{i}" for i in range(len(COSTLY))])
async def test_cost_budget_refuses_before_execution(http, chain, command_counter, document, variables) -> None:
    budget = Limits().max_query_cost
    command_counter.reset()
    responses = await while_healthy(http, [post(http, document, variables, headers={"accept": GR}) for _ in range(4)])
    for response in responses:
        assert response.status_code == 400, response.text
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "QUERY_TOO_COSTLY", error
        assert error["extensions"]["budget"] == budget and error["extensions"]["cost"] > budget
        assert f"exceeds the budget of {budget}" in error["message"]
    assert command_counter.count("find", "aggregate") == 0  # refused before any read


async def test_within_budget_the_same_shapes_answer(http, chain) -> None:
    """Smaller pages make the same nesting affordable."""
    cheap = [
        post(http, "{ lots(first: 2) { edges { node { " + nest("parents", 2) + " } } } }"),
        post(http, '{ site(id: "%s") { attestations(first: 2) { site { attestations(first: 2) { id } } } } }' % chain.site_id),
        post(http, "query($n: Int!) { lots(first: $n) { edges { node { claims(first: 5) { id } } } } }", {"n": 20}),
    ]
    for response in await while_healthy(http, cheap):
        assert response.status_code == 200 and "errors" not in response.json(), response.text
    site = (await post(http, '{ site(id: "%s") { attestations(first: 1) { id } } }' % chain.site_id)).json()
    assert len(site["data"]["site"]["attestations"]) == 1


async def test_list_relations_page_with_first_and_after(http, chain) -> None:
    lot = chain.refined[0]
    everything = (await post(http, "query($l: ID!) { claims(lotId: $l) { id } }", {"l": lot})).json()["data"]["claims"]
    assert everything == [{"id": chain.claim_id}]
    after = (await post(http, "query($l: ID!, $a: ID) { claims(lotId: $l, after: $a) { id } }", {"l": lot, "a": chain.claim_id})).json()
    assert after["data"]["claims"] == []
    for first in (0, -1, Limits().max_page_size + 1):
        body = (await post(http, "query($l: ID!, $f: Int) { lot(id: $l) { claims(first: $f) { id } } }", {"l": lot, "f": first})).json()
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body


def test_every_list_field_has_a_cost_rule() -> None:
    """A new list field must be given a bound (or be declared unmultiplied) before it ships."""
    known = CONNECTIONS | RELATIONS | set(DECLARED_BOUNDS) | UNMULTIPLIED_LISTS | {"nodes", ENTITIES}
    schema = build_schema()._schema
    unknown = []
    for type_ in schema.type_map.values():
        if type_.name.startswith("__") or not isinstance(type_, graphql.GraphQLObjectType):
            continue
        for name, field in type_.fields.items():
            inner = graphql.get_nullable_type(field.type)
            if isinstance(inner, graphql.GraphQLList) and name not in known:
                unknown.append(f"{type_.name}.{name}")
    assert not unknown, unknown


@pytest.mark.parametrize("n", [2, 10, 40, 200])
def test_analysis_counts_the_expanded_document(n: int) -> None:
    """Cost grows with the paths through fragments, computed without walking them."""
    limits = Limits(max_query_cost=10**100, max_aliases=10**100, max_query_depth=10**6)
    document = graphql.parse(diamond_fan_out(n, 'lot(id: "x") { id }'))
    assert analyse(document, None, {}, limits) == []
    errors = analyse(document, None, {}, Limits(max_query_cost=2 ** (n + 1) - 1))
    assert errors and errors[0].extensions["cost"] == min(2 ** (n + 1), 2**63 - 1)


# --------------------------------------------------------------------------- 3. _entities


def entities(n: int) -> list[dict[str, str]]:
    return [{"__typename": "Lot", "id": f"lot_{i}"} for i in range(n)]


ENTITIES_QUERY = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Lot { id } } }"


@pytest.mark.parametrize("n", [Limits().max_entities + 1, 1000, 18_000])
async def test_entities_beyond_the_cap_are_refused(http, n: int) -> None:
    cap = Limits().max_entities
    responses = await while_healthy(http, [post(http, ENTITIES_QUERY, {"r": entities(n)}) for _ in range(3)])
    for response in responses:
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "QUERY_TOO_COSTLY" and error["extensions"]["cost"] == n
        assert f"at most {cap} representations" in error["message"]


async def test_entities_literal_list_is_counted_too(http) -> None:
    cap = Limits().max_entities
    literal = ", ".join(f'{{__typename: "Lot", id: "l{i}"}}' for i in range(cap + 1))
    (response,) = await while_healthy(http, [post(http, f"{{ _entities(representations: [{literal}]) {{ __typename }} }}")])
    assert codes(response) == ["QUERY_TOO_COSTLY"], response.text


async def test_entities_at_the_cap_answer(http) -> None:
    cap = Limits().max_entities
    (response,) = await while_healthy(http, [post(http, ENTITIES_QUERY, {"r": entities(cap)})])
    assert response.json() == {"data": {"_entities": [None] * cap}}


async def test_entities_cost_multiplies_the_selection(http) -> None:
    cap = Limits().max_entities
    deep = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Lot { " + nest("parents", 2) + " } } }"
    (response,) = await while_healthy(http, [post(http, deep, {"r": entities(cap)})])
    assert codes(response) == ["QUERY_TOO_COSTLY"], json.dumps(response.json())[:300]
