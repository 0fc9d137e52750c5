"""HTTP behaviour: GraphQL over HTTP, limits, health, and a real uvicorn over TCP."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app, negotiate
from api.settings import Settings
from api.store import Store

GR = "application/graphql-response+json"


def nested(depth: int) -> str:
    """`{ site(id: "x") { attestations(first: 1) { site { ... { id } } } } }` with `depth`
    levels of fields: deep, but cheap (every list holds one item)."""
    inner = "id"
    for level in reversed(range(depth - 1)):  # level 0 sits right under the root `site`
        inner = f"attestations(first: 1) {{ {inner} }}" if level % 2 == 0 else f"site {{ {inner} }}"
    return f'{{ site(id: "x") {{ {inner} }} }}'


# --------------------------------------------------------------------------- GraphQL over HTTP


async def test_graphql_response_json_request_errors_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ lots(first: "}, headers={"accept": GR})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(GR)
    body = response.json()
    assert "data" not in body and body["errors"][0]["message"].startswith("Syntax Error")

    response = await client.post("/graphql", json={"query": "{ lot(id: \"x\") { nope } }"}, headers={"accept": GR})
    assert response.status_code == 400 and "nope" in response.json()["errors"][0]["message"]


async def test_graphql_response_json_success_and_field_errors_are_200(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": '{ lot(id: "x") { id } }'}, headers={"accept": GR})
    assert response.status_code == 200 and response.headers["content-type"].startswith(GR)
    assert response.json() == {"data": {"lot": None}}
    # execution started: a resolver error is a 200 with data
    response = await client.post("/graphql", json={"query": "{ lots(first: 0) { edges { cursor } } }"},
                                 headers={"accept": GR})  # fmt: skip
    assert response.status_code == 200 and response.json()["data"] is None
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_application_json_keeps_the_classic_behaviour(client: httpx.AsyncClient) -> None:
    for accept in (None, "application/json", "*/*"):
        headers = {"accept": accept} if accept else {}
        response = await client.post("/graphql", json={"query": "{ lots(first: "}, headers=headers)
        assert response.status_code == 200, accept
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["errors"]


async def test_malformed_requests_are_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", content=b"{not json", headers={"content-type": "application/json",
                                                                             "accept": GR})  # fmt: skip
    assert response.status_code == 400 and response.headers["content-type"].startswith(GR)
    assert response.json()["errors"][0]["message"]
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers={"accept": "text/plain"})
    assert response.status_code == 406
    response = await client.post("/graphql", json=[{"query": "{ __typename }"}] * 2)
    assert response.status_code == 400  # batching is off
    response = await client.put("/graphql", json={"query": "{ __typename }"})
    assert response.status_code == 405


def test_negotiation() -> None:
    assert negotiate(None) == "application/json"
    assert negotiate("*/*") == "application/json"
    assert negotiate(f"{GR}, application/json;q=0.9") == GR
    assert negotiate(f"application/json, {GR}") == GR
    assert negotiate(f"{GR};q=0.5, application/json") == "application/json"
    assert negotiate("application/*") == "application/json"
    assert negotiate("text/html") is None


async def test_mutations_over_get_are_refused(client: httpx.AsyncClient) -> None:
    query = "mutation { issueLot(envelope: {}) { eventId } }"
    response = await client.get("/graphql", params={"query": query}, headers={"accept": GR})
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    assert "POST" in response.json()["errors"][0]["message"]
    response = await client.get("/graphql", params={"query": query})
    assert response.status_code == 405
    ok = await client.get("/graphql", params={"query": "{ __typename }"})
    assert ok.status_code == 200 and ok.json() == {"data": {"__typename": "Query"}}


async def test_graphiql_on_get_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200 and "graphiql" in response.text.lower()


# --------------------------------------------------------------------------- limits


async def test_depth_limit(client: httpx.AsyncClient, api_settings: Settings) -> None:
    limit = api_settings.limits.max_query_depth
    ok = await client.post("/graphql", json={"query": nested(limit)})  # the root field is depth 0
    assert "errors" not in ok.json(), ok.json()
    response = await client.post("/graphql", json={"query": nested(limit + 1)}, headers={"accept": GR})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == f"'anonymous' exceeds maximum operation depth of {limit}"


async def test_alias_limit(client: httpx.AsyncClient, api_settings: Settings) -> None:
    n = api_settings.limits.max_aliases
    ok = " ".join(f'a{i}: lot(id: "x") {{ id }}' for i in range(n))
    assert "errors" not in (await client.post("/graphql", json={"query": f"{{ {ok} }}"})).json()
    too_many = " ".join(f'a{i}: lot(id: "x") {{ id }}' for i in range(n + 1))
    response = await client.post("/graphql", json={"query": f"{{ {too_many} }}"}, headers={"accept": GR})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == f"{n + 1} aliases found. Allowed: {n}"
    # through a fragment (the bypass fixed in strawberry 0.315.7)
    fragment = " ".join(f'b{i}: lot(id: "x") {{ id }}' for i in range(n + 1))
    response = await client.post("/graphql", json={"query": f"{{ ...F }} fragment F on Query {{ {fragment} }}"})
    assert "aliases found" in response.json()["errors"][0]["message"]


async def test_token_limit(client: httpx.AsyncClient, api_settings: Settings) -> None:
    fields = " ".join("__typename" for _ in range(api_settings.limits.max_tokens + 10))
    response = await client.post("/graphql", json={"query": f"{{ {fields} }}"}, headers={"accept": GR})
    assert response.status_code == 400
    assert "tokens" in response.json()["errors"][0]["message"]


async def test_body_limit(client: httpx.AsyncClient, api_settings: Settings) -> None:
    limit = api_settings.limits.max_body_bytes
    big = {"query": "{ __typename }", "variables": {"pad": "x" * limit}}
    response = await client.post("/graphql", json=big)
    assert response.status_code == 413 and str(limit) in response.json()["errors"][0]["message"]

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    response = await client.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    small = await client.post("/graphql", json={"query": "{ __typename }", "variables": {"pad": "x" * 1000}})
    assert small.status_code == 200


# --------------------------------------------------------------------------- health


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_healthz_503_when_the_database_is_gone(api_settings: Settings) -> None:
    from conftest import free_port

    dead = await Store.connect(f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", "x",
                               serverSelectionTimeoutMS=200)  # fmt: skip
    app = create_app(api_settings, store=dead)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        response = await c.get("/healthz")
    await dead.close()
    assert response.status_code == 503 and response.json()["status"] == "unavailable"


def test_settings_need_a_root_key(monkeypatch) -> None:
    from api.settings import SettingsError

    monkeypatch.delenv("ORETRACE_ROOT_PUBLIC_KEY", raising=False)
    with pytest.raises(SettingsError, match="ORETRACE_ROOT_PUBLIC_KEY"):
        create_app(Settings.from_env({}))
    with pytest.raises(SettingsError, match="root_public_key"):
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": "not-hex"})
    s = Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": "AB" * 32, "ORETRACE_MAX_ALIASES": "3"})
    assert s.root_public_key == "ab" * 32 and s.limits.max_aliases == 3 and s.mongodb_uri is None


@pytest.mark.parametrize(("value", "seconds"), [(None, 120.0), ("600", 600.0), ("0.5", 0.5), ("3600", 3600.0)])
def test_embedded_startup_timeout_is_a_setting(value, seconds) -> None:
    env = {"ORETRACE_ROOT_PUBLIC_KEY": "ab" * 32}
    if value is not None:
        env["ORETRACE_EMBEDDED_STARTUP_TIMEOUT_SECONDS"] = value
    assert Settings.from_env(env).embedded_startup_timeout == seconds


@pytest.mark.parametrize("value", ["0", "-1", "3601", "soon", "nan"])
def test_embedded_startup_timeout_out_of_range_is_refused(value) -> None:
    from api.settings import SettingsError

    with pytest.raises(SettingsError, match="embedded_startup_timeout"):
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": "ab" * 32, "ORETRACE_EMBEDDED_STARTUP_TIMEOUT_SECONDS": value})


# --------------------------------------------------------------------------- real uvicorn over TCP


async def test_over_tcp(live_server: str, world) -> None:
    async with httpx.AsyncClient(base_url=live_server) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        env = world.register("tcp-org", "trader")
        response = await c.post(
            "/graphql",
            json={"query": "mutation($e: JSON!) { registerOrganization(envelope: $e) { eventId } }",
                  "variables": {"e": env.to_json()}},  # fmt: skip
            headers={"accept": GR},
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"]["registerOrganization"]["eventId"] == env.event_id
        response = await c.post("/graphql", json={"query": '{ organization(id: "tcp-org") { name roles } }'})
        assert response.json()["data"]["organization"] == {"name": "Tcp Org", "roles": ["trader"]}
        big = await c.post("/graphql", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
        assert big.status_code == 413


def test_import_layers() -> None:
    """api.app / api.server compose (and api.query_process, the heavy-query process's own
    composition: schema + store); resolvers use api.store/service/settings only; no layer imports sdk."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def imports(path: Path) -> set[str]:
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
        return found

    for path in (root / "api").glob("*.py"):
        used = imports(path)
        assert not any(m.startswith("sdk") for m in used), path
        if path.stem not in ("app", "server", "query_process"):
            assert not any(m.startswith("resolvers") for m in used), f"{path} must not import resolvers"
    for path in (root / "resolvers").glob("*.py"):
        used = imports(path)
        assert not any(m.startswith("sdk") for m in used), path
        api_modules = {m for m in used if m.startswith("api")}
        assert api_modules <= {"api.store", "api.service", "api.settings"}, (path, api_modules)
    for path in (root / "ledger").glob("*.py"):
        assert not any(m.split(".")[0] in ("api", "resolvers", "sdk", "pymongo") for m in imports(path)), path


async def test_costly_root_fields_are_capped_per_operation(client: httpx.AsyncClient) -> None:
    """Aliases must not multiply the data-sized work of disclosureBundle / provenance."""
    bundle = 'disclosureBundle(lotId: "x", claimId: "y")'
    one = await client.post("/graphql", json={"query": f"{{ {bundle} }}"}, headers={"accept": GR})
    assert one.status_code == 200 and one.json()["errors"][0]["extensions"]["code"] == "INVALID_CLAIM"
    for query in (
        f"{{ a: {bundle} b: {bundle} }}",
        f"{{ a: {bundle} ...F }} fragment F on Query {{ b: {bundle} }}",
        f"{{ ... on Query {{ a: {bundle} }} b: {bundle} }}",
        '{ a: provenance(lotId: "x") { depth } b: provenance(lotId: "y") { depth } }',
    ):
        response = await client.post("/graphql", json={"query": query}, headers={"accept": GR})
        assert response.status_code == 400, (query, response.text)
        assert "per operation" in response.json()["errors"][0]["message"], response.json()
    # one field spelt twice under one response key executes once (GraphQL merges it): allowed
    merged = await client.post(
        "/graphql", json={"query": f"{{ {bundle} ...F ...F }} fragment F on Query {{ {bundle} }}"}, headers={"accept": GR}
    )
    assert merged.status_code == 200, merged.text
    # a fragment cycle is reported by graphql-core's own rule, not looped on
    cyclic = await client.post("/graphql", json={"query": "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"})
    assert "errors" in cyclic.json()


async def test_request_errors_carry_a_code_and_the_sdk_types_them(app, api_settings: Settings) -> None:
    """Parse and validation errors (limits included) answer a readable message AND a code,
    so the SDK raises ApiRejection for them, as docs/sdk.md promises."""
    from sdk.client import ApiRejection, Client

    limit = api_settings.limits.max_query_depth
    cases = [
        ("{ lot(id: ", "GRAPHQL_PARSE_FAILED", "Syntax Error"),
        ("{ nope }", "GRAPHQL_VALIDATION_FAILED", "Cannot query field"),
        (nested(limit + 1), "GRAPHQL_VALIDATION_FAILED", "exceeds maximum operation depth"),
    ]
    async with Client("http://test/graphql", transport=httpx.ASGITransport(app=app)) as sdk:
        for query, code, message in cases:
            with pytest.raises(ApiRejection) as info:
                await sdk.execute(query)
            assert info.value.code == code and message in info.value.message, (query, info.value)
    # the classic application/json answer carries the same codes
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = (await client.post("/graphql", json={"query": "{ nope }"})).json()
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
