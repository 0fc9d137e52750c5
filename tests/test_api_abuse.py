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
from api.store import Store
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


#: The collections the COSTLY documents would read (not `events` or `log_*`: the log task reads those).
LEDGER_READS = frozenset({"lots", "sites", "attestations", "organizations", "claims"})


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
    # refused before any read (the transparency log's background task reads its own state meanwhile)
    assert command_counter.count("find", "aggregate", collections=LEDGER_READS) == 0, command_counter.names


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
    operation = document.definitions[0]
    assert analyse(operation, document, {}, limits).errors == []
    assert analyse(operation, document, {}, limits).cost == 2 ** (n + 1)
    errors = analyse(operation, document, {}, Limits(max_query_cost=2 ** (n + 1) - 1)).errors
    assert errors and errors[0].extensions["cost"] == min(2 ** (n + 1), 2**63 - 1)


# --------------------------------------------------------------------------- 3. _entities


def entities(n: int) -> list[dict[str, str]]:
    return [{"__typename": "Lot", "id": f"lot_{i}"} for i in range(n)]


ENTITIES_QUERY = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Lot { id } } }"


@pytest.mark.parametrize("n", [Limits().max_entities + 1, 1000, 3332, 3333, 18_000])
async def test_entities_beyond_the_cap_are_refused(http, n: int) -> None:
    cap, limits = Limits().max_entities, Limits()
    responses = await while_healthy(http, [post(http, ENTITIES_QUERY, {"r": entities(n)}) for _ in range(3)])
    # the request object, its query, its variables, the list, and 3 values per representation
    over_body_values = 4 + 3 * n > limits.max_body_values
    for response in responses:
        error = response.json()["errors"][0]
        if over_body_values:  # refused before GraphQL sees it (18,000: 54,004 values)
            assert response.status_code == 400 and error["extensions"]["code"] == "BAD_REQUEST"
            assert f"more than {limits.max_body_values} JSON values" in error["message"]
            continue
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


# --------------------------------------------------------------------------- 4. unparsable bodies


def deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


UNPARSABLE_BODIES = {
    "nested-1000": deep_array(1000),
    "nested-100000": deep_array(100_000),
    "nested-object": b'{"query": "{ __typename }", "variables": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}",
    "nested-variables": b'{"query": "{ __typename }", "variables": {"x": ' + deep_array(3000) + b"}}",
    "int-5000-digits": b'{"query": "{ __typename }", "variables": {"x": ' + b"9" * 5000 + b"}}",
    "int-top-level": b"9" * 5000,
    "duplicate-query": b'{"query": "{ __typename }", "query": "mutation { x }"}',
    "duplicate-variable": b'{"query": "query($x: ID!) { lot(id: $x) { id } }", "variables": {"x": "a", "x": "b"}}',
    "lone-surrogate": b'{"query": "query($x: ID!) { lot(id: $x) { id } }", "variables": {"x": "\\ud800"}}',
    "lone-surrogate-key": b'{"query": "{ __typename }", "variables": {"\\udfff": 1}}',
    "bad-utf8": b'{"query": "{ lot(id: \\"\xff\xfe\\") { id } }"}',
    "nan": b'{"query": "{ __typename }", "variables": {"x": NaN}}',
    "infinity": b'{"query": "{ __typename }", "variables": {"x": -Infinity}}',
    "truncated": b'{"query": "{ __typename }"',
    "empty": b"",
    "not-json": b"query { __typename }",
    "top-level-array": b'[{"query": "{ __typename }"}]',
    "top-level-string": b'"{ __typename }"',
    "top-level-number": b"42",
    "top-level-null": b"null",
    "query-not-string": b'{"query": 42}',
    "variables-not-object": b'{"query": "{ __typename }", "variables": [1]}',
    "operation-name-not-string": b'{"query": "{ __typename }", "operationName": 42}',
}


@pytest.mark.parametrize("accept", [None, GR])
@pytest.mark.parametrize("name", sorted(UNPARSABLE_BODIES))
async def test_unparsable_body_is_a_400_with_a_json_error(http, name: str, accept: str | None, caplog) -> None:
    headers = {"content-type": "application/json", **({"accept": accept} if accept else {})}
    requests = [http.post("/graphql", content=UNPARSABLE_BODIES[name], headers=headers) for _ in range(3)]
    for response in await while_healthy(http, requests):
        assert response.status_code == 400, (response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith(accept or "application/json")
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] in ("BAD_REQUEST", "GRAPHQL_PARSE_FAILED"), error
        assert "Traceback" not in response.text and "Error(" not in response.text
    assert "Traceback" not in caplog.text


GET_PARAMS = {
    "variables-nested": {"query": "{ __typename }", "variables": deep_array(2000).decode()},
    "variables-duplicate": {"query": "query($x: ID!) { lot(id: $x) { id } }", "variables": '{"x": "a", "x": "b"}'},
    "variables-big-int": {"query": "{ __typename }", "variables": '{"x": ' + "1" * 5000 + "}"},
    "variables-not-json": {"query": "{ __typename }", "variables": "{x: 1}"},
    "variables-array": {"query": "{ __typename }", "variables": "[1, 2]"},
    "extensions-nested": {"query": "{ __typename }", "extensions": deep_array(2000).decode()},
    "extensions-nan": {"query": "{ __typename }", "extensions": '{"a": NaN}'},
}


@pytest.mark.parametrize("name", sorted(GET_PARAMS))
async def test_unparsable_get_parameters_are_a_400(http, name: str, caplog) -> None:
    requests = [http.get("/graphql", params=GET_PARAMS[name], headers={"accept": "application/json"}) for _ in range(3)]
    for response in await while_healthy(http, requests):
        assert response.status_code == 400, (response.status_code, response.text[:300])
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert "Traceback" not in caplog.text


async def test_a_null_variables_parameter_means_none(http) -> None:
    response = await http.get("/graphql", params={"query": "{ __typename }", "variables": "null"}, headers={"accept": "application/json"})
    assert response.json() == {"data": {"__typename": "Query"}}


# --------------------------------------------------------------------------- 5. malformed arguments


ID_FIELDS = {
    "lot": 'query($x: ID!) { lot(id: $x) { id } }',
    "organization": 'query($x: ID!) { organization(id: $x) { id } }',
    "site": 'query($x: ID!) { site(id: $x) { id } }',
    "attestation": 'query($x: ID!) { attestation(id: $x) { id } }',
    "event": 'query($x: ID!) { event(id: $x) }',
    "claims": 'query($x: ID!) { claims(lotId: $x) { id } }',
    "provenance": 'query($x: ID!) { provenance(lotId: $x) { depth } }',
    "disclosureBundle": 'query($x: ID!) { disclosureBundle(lotId: $x, claimId: $x) }',
    "lots-owner": 'query($x: ID!) { lots(owner: $x) { edges { cursor } } }',
    "sealedOpenings": 'query($x: ID!) { sealedOpenings(recipient: $x) { edges { cursor } } }',
    "claims-after": 'query($x: ID!) { claims(lotId: "l", after: $x) { id } }',
}
BAD_IDS = {
    "over-long": "l" * 65,
    "megabyte": "l" * 500_000,
    "empty": "",
    "space": "lot 1",
    "control": "lot\x00",
    "odd-unicode": "lot_\u202e\u0301",
    "emoji": "\U0001f600",
    "braces": '{"$gt": ""}',
}


@pytest.mark.parametrize("field", sorted(ID_FIELDS))
async def test_malformed_ids_are_bad_user_input(http, field: str, caplog) -> None:
    requests = [post(http, ID_FIELDS[field], {"x": bad}) for bad in BAD_IDS.values()]
    for bad, response in zip(BAD_IDS, await while_healthy(http, requests), strict=True):
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        assert codes(response) == ["BAD_USER_INPUT"], (bad, json.dumps(body)[:300])
        assert "oretrace identifier" in body["errors"][0]["message"]
        assert len(response.content) < 2000  # the bad value is not echoed back in full
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("literal", ['"' + "l" * 65 + '"', '""', '"a b"', '"\\u00e9t\\u00e9"'])
async def test_malformed_id_literals_are_validation_errors(http, literal: str) -> None:
    (response,) = await while_healthy(http, [post(http, f"{{ lot(id: {literal}) {{ id }} }}")])
    assert codes(response) == ["GRAPHQL_VALIDATION_FAILED"], response.text[:300]
    assert "oretrace identifier" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("literal", ['"\\ud800"', '"\\udfff"', '"a\\ud800b"'])
async def test_lone_surrogate_literals_are_parse_errors(http, literal: str) -> None:
    (response,) = await while_healthy(http, [post(http, f"{{ lot(id: {literal}) {{ id }} }}")])
    assert codes(response) == ["GRAPHQL_PARSE_FAILED"], response.text[:300]


async def test_malformed_entity_ids_are_bad_user_input_per_item(http) -> None:
    reps = [{"__typename": "Lot", "id": bad} for bad in BAD_IDS.values() if len(bad) < 1000]
    body = (await post(http, ENTITIES_QUERY, {"r": [*reps, {"__typename": "Lot", "id": "lot_ok"}]})).json()
    assert body["data"]["_entities"] == [None] * (len(reps) + 1)
    assert sorted(e["path"][1] for e in body["errors"]) == list(range(len(reps)))
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}


@pytest.mark.parametrize("exception", [RuntimeError("mongodb://admin:hunter2@db"), KeyError("Missing"), RecursionError()])
async def test_an_exception_before_execution_is_masked(http, monkeypatch, caplog, exception: Exception) -> None:
    """A bug in the pre-execution checks answers a masked error, never its text."""

    def boom(*_args: Any) -> None:
        raise exception

    monkeypatch.setattr("resolvers.schema.analyse", boom)
    (response,) = await while_healthy(http, [post(http, "{ __typename }")])
    (error,) = response.json()["errors"]
    assert error["message"] == "Internal server error" and error["extensions"]["code"] == "INTERNAL_SERVER_ERROR", error
    assert "hunter2" not in response.text and "Missing" not in response.text


CONNECTIONS_AFTER = {
    "lots": "query($a: String) { lots(after: $a) { edges { cursor } } }",
    "organizations": "query($a: String) { organizations(after: $a) { edges { cursor } } }",
    "sites": "query($a: String) { sites(after: $a) { edges { cursor } } }",
    "sealedOpenings": 'query($a: String) { sealedOpenings(recipient: "mine", after: $a) { edges { cursor } } }',
}
BAD_CURSORS = ["!!!", "c" * 500_000, "\u00e9t\u00e9", "\u202e\u0000", "QUFB" * 100]


@pytest.mark.parametrize("field", sorted(CONNECTIONS_AFTER))
async def test_malformed_cursors_are_bad_user_input_and_not_echoed(http, field: str) -> None:
    requests = [post(http, CONNECTIONS_AFTER[field], {"a": bad}) for bad in BAD_CURSORS]
    for response in await while_healthy(http, requests):
        assert codes(response) == ["BAD_USER_INPUT"], response.text[:300]
        assert "not a cursor" in response.json()["errors"][0]["message"] and len(response.content) < 1000


@pytest.mark.parametrize(
    "body",
    [deep_array(100_000), deep_array(500_000), b'{"query": "{ __typename }", "variables": ' + b'{"a":' * 150_000 + b"1" + b"}" * 150_001,
     b'{"query": "{ __typename }", "variables": {"x": ' + b"[" * 400_000 + b"}}"],
    ids=["array-100k", "array-500k", "object-150k", "unclosed-400k"],
)
async def test_deep_bodies_are_refused_even_with_a_raised_recursion_limit(http, body: bytes) -> None:
    """py_ecc raises the recursion limit to 100,000 on import; json's C decoder then
    overflowed the C stack on such bodies (a segmentation fault of the server)."""
    import sys

    import py_ecc  # noqa: F401  (the import raises the limit, as in a server that loaded it)

    assert sys.getrecursionlimit() >= 100_000
    requests = [http.post("/graphql", content=body, headers={"content-type": "application/json"}) for _ in range(2)]
    for response in await while_healthy(http, requests):
        assert response.status_code == 400
        assert "nested deeper than 64" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        (b"[]", False),
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b"[{" * 32 + b"}]" * 32, False),
        (b"[{" * 33 + b"}]" * 33, True),
        (b'{"a": "' + b"[" * 100 + b'"}', False),  # brackets inside a string
        (b'["\\"' + b"[" * 100 + b'"]', False),  # after an escaped quote, still inside the string
        (b"[]" * 100_000, False),  # many, none deep
        ("[" * 65, True),  # text too
    ],
)
def test_nesting_is_measured_without_parsing(text, deeper: bool) -> None:
    from ledger.encoding import StrictJSONError, loads_strict

    try:
        loads_strict(text)
    except StrictJSONError as exc:
        assert ("nested deeper" in str(exc)) is deeper, exc
    else:
        assert not deeper


@pytest.mark.parametrize(("heavy_cost", "slots", "most_at_once"), [(1, 1, 1), (1, 2, 2), (10_000, 1, 4)])
async def test_heavy_operations_execute_a_few_at_a_time(api_settings, store, monkeypatch, heavy_cost, slots, most_at_once) -> None:
    """Four concurrent operations: those at or above heavy_query_cost run `slots` at a time
    (in heavy-query processes, held there by SIGSTOP: api.heavy_queries); cheap ones all
    at once (on the event loop, held in Store.event). Before heavy queries moved to
    processes, both kinds were held in Store.event (the worker thread shared the class)."""
    from api.app import create_app
    from test_api_heavy_queries import resume, stopped_children, wait_for

    settings = api_settings.model_copy(update={"limits": Limits(heavy_query_cost=heavy_cost, max_heavy_operations=slots)})
    app = create_app(settings, store=store)
    query = {"query": '{ event(id: "evt_x") }'}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            if heavy_cost == 1:
                processes = app.state.runtime.query_worker
                pids = await stopped_children(app, slots)
                requests = [asyncio.create_task(client.post("/graphql", json=query)) for _ in range(4)]
                try:
                    await wait_for(lambda: len(processes.pids("busy")) == slots, f"{slots} heavy queries sent")
                    await asyncio.sleep(0.2)  # a chance for more to start, if allowed (no assertion on time)
                    seen = [processes.executions]
                    assert not any(r.done() for r in requests)
                finally:
                    resume(pids)
                responses = await asyncio.gather(*requests)
                assert processes.executions == 4
            else:
                running, seen = 0, []

                async def slow_event(self, event_id: str):
                    nonlocal running
                    running += 1
                    seen.append(running)
                    await asyncio.sleep(0.05)  # overlap, if allowed (no assertion on time)
                    running -= 1
                    return None

                monkeypatch.setattr(Store, "event", slow_event)
                responses = await asyncio.gather(*(client.post("/graphql", json=query) for _ in range(4)))
    finally:
        await app.state.runtime.stop()  # readiness check, heavy-query processes, ingestion pool (not the store)
    assert all(r.json() == {"data": {"event": None}} for r in responses)
    assert max(seen) == most_at_once, seen


async def test_large_bodies_are_decoded_off_the_event_loop(http, monkeypatch) -> None:
    """A body over INLINE_BODY_BYTES is decoded in a decoder process (api.body_decoding),
    not in the server's; smaller ones inline; same answers."""
    import threading

    from api import app as app_module

    threads: list[str] = []
    decode = app_module.GraphQLView._decode

    def spy(view, data):
        threads.append(threading.current_thread().name)
        return decode(view, data)

    monkeypatch.setattr(app_module.GraphQLView, "_decode", spy)
    pad = "x" * app_module.INLINE_BODY_BYTES
    good = {"query": "{ __typename }", "variables": {"unused": pad}}  # undeclared variables are ignored
    responses = await while_healthy(http, [
        post(http, "{ __typename }"),
        http.post("/graphql", json=good),
        http.post("/graphql", content=json.dumps(good)[:-1].encode(), headers={"content-type": "application/json"}),
        http.post("/graphql", content=deep_array(100_000), headers={"content-type": "application/json"}),
    ])  # fmt: skip
    assert [r.status_code for r in responses] == [200, 200, 400, 400]
    assert responses[0].json() == responses[1].json() == {"data": {"__typename": "Query"}}
    assert "not valid I-JSON" in responses[2].json()["errors"][0]["message"]
    assert threads == [threading.main_thread().name], threads  # the three large ones were not decoded here
