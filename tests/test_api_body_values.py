"""A request body may hold at most `Limits.max_body_values` JSON values
(ORETRACE_MAX_BODY_VALUES): over it, a 400 with a JSON error naming the limit,
whether the body is decoded in the server (small) or in a decoder process
(over 64 KiB), and for a GET's variables alike; at the limit, the request is served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args
from urllib.parse import urlencode

import httpx
import pytest

from api.app import INLINE_BODY_BYTES, create_app
from api.settings import Limits, Settings, SettingsError
from ledger.encoding import TooManyJSONValues, check_value_count, loads_strict
from ledger.models import OriginClass

JSON = {"content-type": "application/json"}
CAP = 100


def values_in(value) -> int:
    """JSON values of `value` counted the obvious (recursive) way: the reference for check_value_count."""
    if isinstance(value, dict):
        return 1 + sum(values_in(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(values_in(v) for v in value)
    return 1


#: variables of several shapes, each holding exactly `n` values with the request object around it
#: ({"query": ..., "variables": {...}}: the object, the query string and the variables object = 3)
SHAPES = {
    "flat array of numbers": lambda n: {"a": list(range(n - 4))},
    "empty arrays": lambda n: {"a": [[] for _ in range(n - 4)]},
    "empty objects": lambda n: {"a": [{} for _ in range(n - 4)]},
    "object members": lambda n: {f"k{i}": None for i in range(n - 3)},
    "nested pairs": lambda n: {"a": [[i, "x"] for i in range((n - 4) // 3)] + [True] * ((n - 4) % 3)},
}


def request_with(shape: str, n: int) -> dict:
    request = {"query": "{ __typename }", "variables": SHAPES[shape](n)}
    assert values_in(request) == n
    return request


def body(request: dict, large: bool) -> bytes:
    text = json.dumps(request).encode()
    assert len(text) <= INLINE_BODY_BYTES
    return text + b" " * (INLINE_BODY_BYTES + 10 - len(text)) if large else text


@pytest.fixture
async def client(api_settings, store):
    settings = api_settings.model_copy(update={"limits": Limits(max_body_values=CAP)})
    app = create_app(settings, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120) as client:
        yield client
    await app.state.runtime.stop()


@pytest.mark.parametrize("large", [False, True], ids=["in the server", "in a decoder process"])
@pytest.mark.parametrize("shape", SHAPES)
async def test_a_body_over_the_value_limit_is_refused_and_one_at_it_served(client, shape, large) -> None:
    over = await client.post("/graphql", content=body(request_with(shape, CAP + 1), large), headers=JSON)
    assert over.status_code == 400 and over.headers["content-type"].startswith("application/json")
    (error,) = over.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert f"more than {CAP} JSON values" in error["message"] and "ORETRACE_MAX_BODY_VALUES" in error["message"]
    at = await client.post("/graphql", content=body(request_with(shape, CAP), large), headers=JSON)
    assert at.status_code == 200 and at.json() == {"data": {"__typename": "Query"}}
    assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("n, refused", [(CAP - 1, False), (CAP, False), (CAP + 1, True), (50 * CAP, True)])
async def test_a_get_whose_variables_hold_too_many_values_is_refused(client, n, refused) -> None:
    variables = json.dumps(list(range(n - 1)))  # the array and its n - 1 numbers
    response = await client.get("/graphql?" + urlencode({"query": "{ __typename }", "variables": variables}))
    if refused:
        assert response.status_code == 400
        assert f"more than {CAP} JSON values" in response.json()["errors"][0]["message"]
    else:  # an array is not an object of variables: refused as such, not for its size
        assert "JSON values" not in response.text


@pytest.mark.parametrize("shape", SHAPES)
def test_check_value_count_counts_every_value_and_no_member_name(shape) -> None:
    for n in (5, 40, 1001):
        value = request_with(shape, n)
        check_value_count(value, n)
        with pytest.raises(TooManyJSONValues, match=f"more than {n - 1} JSON values"):
            check_value_count(value, n - 1)
        text = json.dumps(value)
        assert loads_strict(text, max_values=n) == value
        with pytest.raises(TooManyJSONValues):
            loads_strict(text, max_values=n - 1)


@pytest.mark.parametrize("value", ["99", "1000001", "-1", "ten", "1e4"])
def test_the_value_limit_setting_is_bounded(value) -> None:
    with pytest.raises(SettingsError, match="max_body_values"):
        Settings.from_env({"ORETRACE_MAX_BODY_VALUES": value, "ORETRACE_ROOT_PUBLIC_KEY": "ab" * 32})


def test_the_default_leaves_ten_times_room_for_a_transformation_at_the_schema_maxima() -> None:
    """A transformation envelope (the test vectors') stretched to the schema's maxima - 32
    inputs, 20 outputs, a commitment for every origin class in each output and the loss -
    in a publish request: its values are a small fraction of the default limit (proofs
    and sealed openings are one string each, whatever their length)."""
    cases = json.loads((Path(__file__).parent / "vectors" / "envelopes.json").read_text())["cases"]
    envelope = next(c for c in _envelopes(cases) if c["payload"]["type"] == "transform")
    payload = envelope["payload"]
    every_class = {k: "ab" * 48 for k in get_args(OriginClass)}
    payload["inputs"] = [f"lot_{i:024x}" for i in range(32)]
    payload["outputs"] = [{**payload["outputs"][0], "commitments": dict(every_class)} for _ in range(20)]
    payload["loss"] = dict(every_class)
    request = {"query": "mutation($e: JSON!) { publish(envelope: $e) { eventId } }", "variables": {"e": envelope}}
    assert values_in(request) * 10 <= Limits().max_body_values


def _envelopes(value):
    if isinstance(value, dict):
        if "payload" in value and "signature" in value:
            yield value
        for item in value.values():
            yield from _envelopes(item)
    elif isinstance(value, list):
        for item in value:
            yield from _envelopes(item)
