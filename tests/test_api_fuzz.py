"""A small, bounded schemathesis fuzz of /graphql over TCP (127.0.0.1 only).

Every query and mutation field, plus the federation fields `_entities` and
`_service` (schemathesis skips them unless named), gets a few generated
operations on a published chain, with each kind of Accept header. Arguments of
the `JSON` and `_Any` scalars are drawn from arbitrary JSON (objects shaped like
envelopes / representations included). Each response must be: no 5xx, a JSON
body, no traceback or exception text, every error typed (`extensions.code`)
and none of them an unexpected (masked) one, and the status and media type
docs/api.md promises for the Accept header. Deterministic (derandomized),
a few seconds.
"""

from __future__ import annotations

import asyncio
import logging

import graphql
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.graphql import nodes  # noqa: E402

from conftest import build_chain  # noqa: E402

GR = "application/graphql-response+json"
EXAMPLES_PER_OPERATION = 12
ACCEPTS = (None, "application/json", "*/*", GR, f"{GR}, application/json;q=0.9")

# --------------------------------------------------------------------------- scalar strategies (GraphQL literals)

KEYS = st.one_of(
    st.sampled_from(["__typename", "id", "network", "signer", "key_id", "nonce", "timestamp", "payload", "signature",
                     "type", "org_id", "lot_id", "to", "seq", "roles"]),  # fmt: skip
    st.from_regex(r"\A[_A-Za-z][_0-9A-Za-z]{0,8}\Z"),
)
#: Odd but valid Unicode: combining and enclosing marks, format characters (bidi
#: overrides, zero-width joiners, BOM), private use, separators, controls incl.
#: NUL, non-BMP. (Lone surrogates cannot travel in an I-JSON body: the server
#: refuses such bodies with 400, tests/test_api_abuse.py.)
ODD_TEXT = st.one_of(
    st.text(st.characters(categories=("Mn", "Me", "Cf", "Co", "Zs", "Zl", "Zp", "So", "Cc")), min_size=1, max_size=20),
    st.sampled_from(["\u202e", "\u0000", "\ufeff", "e\u0301", "\U0001f600", "\uffff", "\U0010ffff", "\u200d" * 50]),
)
TEXT = st.one_of(st.text(max_size=20), ODD_TEXT, st.integers(65, 5000).map(lambda n: "l" * n))
LEAVES = st.one_of(
    st.just(nodes.Null),
    st.booleans().map(nodes.Boolean),
    st.integers(-(2**70), 2**70).map(nodes.Int),
    st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
    TEXT.map(nodes.String),
)


def _nested(depth: int, leaf: graphql.ValueNode) -> graphql.ValueNode:
    """`leaf` inside `depth` lists and objects, alternating (deeper than any honest input)."""
    for level in range(depth):
        leaf = nodes.List([leaf]) if level % 2 else _object({"a": leaf})
    return leaf


def _object(fields: dict[str, graphql.ValueNode]) -> graphql.ObjectValueNode:
    return nodes.Object([graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v) for k, v in fields.items()])


JSON_VALUES = st.one_of(
    st.recursive(
        LEAVES,
        lambda inner: st.one_of(st.lists(inner, max_size=3).map(nodes.List), st.dictionaries(KEYS, inner, max_size=5).map(_object)),
        max_leaves=12,
    ),
    st.builds(_nested, st.integers(20, 200), LEAVES),  # deeply nested
)
#: IDs: real ones of the chain, malformed ones (odd Unicode, too long, empty).
IDS = st.one_of(st.sampled_from(["mine", "trader", "site-a", "lot_x", "5"]), TEXT).map(nodes.String)
REPRESENTATIONS = st.one_of(
    st.builds(
        lambda typename, entity_id, extra: _object({**extra, "__typename": typename, "id": entity_id}),
        st.one_of(st.sampled_from(["Lot", "Organization", "Site", "Attestation", "Query"]).map(nodes.String), JSON_VALUES),
        st.one_of(st.sampled_from(["mine", "site-a", "lot_x", ""]).map(nodes.String), JSON_VALUES),
        st.dictionaries(KEYS, JSON_VALUES, max_size=2),
    ),
    JSON_VALUES,
)


# --------------------------------------------------------------------------- checks


def check_response(response, accept: str | None) -> None:
    status, text = response.status_code, response.text
    assert status < 500, (status, text[:500])
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    content_type = response.headers["content-type"][0]
    body = response.json()
    for error in body.get("errors") or ():
        code = (error.get("extensions") or {}).get("code")
        assert code, f"untyped error: {error}"
        assert code != "INTERNAL_SERVER_ERROR", error
    if accept is not None and accept.startswith(GR):
        assert content_type.startswith(GR), content_type
        assert status in (200, 400), (status, text[:300])
        if status == 400:
            assert "data" not in body and body["errors"], body
    else:
        assert content_type.startswith("application/json"), content_type
        assert status == 200, (status, text[:300])


def fuzz(url: str) -> int:
    """Run every operation's bounded fuzz; return the number of requests sent."""
    schemathesis.graphql.scalar("JSON", JSON_VALUES)
    schemathesis.graphql.scalar("_Any", REPRESENTATIONS)
    schemathesis.graphql.scalar("ID", IDS)
    sent = 0
    schemas = (
        schemathesis.graphql.from_url(url),
        schemathesis.graphql.from_url(url).include(name_regex=r"^Query\._(entities|service)$"),
    )
    operations = [result.ok() for schema in schemas for result in schema.get_all_operations()]
    names = {op.label for op in operations}
    assert {"Query.lots", "Query._entities", "Query._service", "Mutation.transferLot"} <= names, names

    for operation in operations:

        @given(case=operation.as_strategy(), accept=st.sampled_from(ACCEPTS))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case, accept: str | None) -> None:
            nonlocal sent
            response = case.call(headers={"Accept": accept} if accept else None, timeout=20)
            sent += 1
            check_response(response, accept)

        run()
    return sent


async def test_schemathesis_fuzz(live_server: str, world, publish, caplog) -> None:
    await build_chain(world, publish, suffix="-fz")
    with caplog.at_level(logging.ERROR, logger="oretrace"):
        # the fuzzer is synchronous (requests); the server runs on this event loop
        sent = await asyncio.to_thread(fuzz, f"{live_server}/graphql")
    assert sent >= 100
    unexpected = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not unexpected, unexpected[:5]
