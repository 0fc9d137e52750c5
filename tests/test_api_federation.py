"""Federation v2 subgraph: SDL with @key, `_entities` in order with nulls, batched."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import build_chain
from resolvers.schema import sdl

ROOT = Path(__file__).resolve().parent.parent

ENTITIES = """query($r: [_Any!]!) { _entities(representations: $r) {
    __typename
    ... on Lot { id product owner { id name } parents { id } }
    ... on Site { id name operator { id } }
    ... on Organization { id name roles }
} }"""


@pytest.fixture(scope="module")
async def chain(world, publish):
    return await build_chain(world, publish)


def test_schema_file_is_current() -> None:
    """schema.graphql is generated: `python -m resolvers.schema > schema.graphql`."""
    assert (ROOT / "schema.graphql").read_text() == sdl(), "schema.graphql drifted: regenerate it"


async def test_service_sdl_has_keys(gql) -> None:
    text = (await gql("{ _service { sdl } }"))["data"]["_service"]["sdl"]
    assert 'type Lot @key(fields: "id")' in text
    assert 'type Organization @key(fields: "id")' in text
    assert 'type Site @key(fields: "id")' in text
    assert "specs.apollo.dev/federation/v2.11" in text


async def test_entities_in_order_with_nulls(gql, chain) -> None:
    reps = [
        {"__typename": "Lot", "id": chain.refined[0]},
        {"__typename": "Lot", "id": "lot_does_not_exist"},
        {"__typename": "Site", "id": chain.site_id},
        {"__typename": "Organization", "id": "mine"},
        {"__typename": "Organization", "id": "nobody"},
        {"__typename": "Lot", "id": chain.issued[0]},
    ]
    body = await gql(ENTITIES, {"r": reps})
    assert "errors" not in body, body
    out = body["data"]["_entities"]
    assert [e and e["id"] for e in out] == [chain.refined[0], None, chain.site_id, "mine", None, chain.issued[0]]
    assert out[0]["owner"]["id"] == "trader" and sorted(p["id"] for p in out[0]["parents"]) == sorted(chain.issued)
    assert out[2]["operator"] == {"id": "mine"} and out[3]["roles"] == ["mine"]


async def test_entities_are_batched(gql, chain, command_counter) -> None:
    reps = [{"__typename": "Lot", "id": x} for x in [*chain.issued, *chain.refined]]
    command_counter.reset()
    body = await gql(ENTITIES, {"r": reps})
    assert all(e is not None for e in body["data"]["_entities"])
    # lots (1), owners (1), parents (1): never one query per entity
    assert command_counter.count("find") <= 3, command_counter.names


async def test_entities_wrapper_does_not_count_against_depth(client, api_settings) -> None:
    """A selection that fits the limit as a whole operation also fits under `_entities`."""
    limit = api_settings.limits.max_query_depth

    def chain_of(depth: int) -> str:
        """A Lot selection `depth` field levels deep: site { attestations(first: 1) { site ... } }
        (deep but cheap: every list holds one item)."""
        inner = "id"
        for level in reversed(range(depth - 1)):
            inner = f"site {{ {inner} }}" if level % 2 == 0 else f"attestations(first: 1) {{ {inner} }}"
        return inner

    # as a whole operation, `lot { <limit levels> }` (limit + 1 fields deep) is the most a client may send
    direct = (await client.post("/graphql", json={"query": f'{{ lot(id: "x") {{ {chain_of(limit)} }} }}'})).json()
    assert "errors" not in direct, direct
    ok = f'{{ _entities(representations: [{{__typename: "Lot", id: "x"}}]) {{ ... on Lot {{ {chain_of(limit + 1)} }} }} }}'
    body = (await client.post("/graphql", json={"query": ok})).json()
    assert "errors" not in body, body
    deep = ok.replace(chain_of(limit + 1), chain_of(limit + 2))
    body = (await client.post("/graphql", json={"query": deep})).json()
    assert body["errors"][0]["message"].endswith(f"maximum operation depth of {limit}")
