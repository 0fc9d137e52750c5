"""A database fault (failpoint `failCommand` on `find`: the one command the query
resolvers send; none sends `aggregate`) during a heavy query executed in a heavy-query
process: the same typed SERVICE_UNAVAILABLE answer, status and Retry-After as in-loop
execution, and the next query answers. On the fault-injection database of
tests/test_api_faults.py (its fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from api.settings import Limits, Settings
from api.store import Store
from test_api_faults import admin, chain, failpoint, fault_db, fstore, fworld, ing, lot_finds, settings  # noqa: F401 - fixtures
from test_api_heavy_query_processes import GR, both_ways, heavy_shapes, same_answer


async def _app(settings: Settings, store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = create_app(settings, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120) as client:
        yield client, app
    await app.state.runtime.stop()


@pytest.fixture(scope="module")
async def proc_http(settings: Settings, fstore: Store):
    """The default heavy-query cost: the shapes below execute in a heavy-query process."""
    async for pair in _app(settings, fstore):
        yield pair


@pytest.fixture(scope="module")
async def loop_http(settings: Settings, fstore: Store):
    async for pair in _app(settings.model_copy(update={"limits": Limits(heavy_query_cost=10**9)}), fstore):
        yield pair


@pytest.mark.parametrize(
    ("command", "query_index", "fault"),
    [
        ("find", 0, {"errorCode": 11600}),  # InterruptedAtShutdown
        ("find", 3, {"errorCode": 262}),  # ExceededTimeLimit
        ("find", 1, {"errorCode": 91}),  # ShutdownInProgress; _entities: with its BAD_USER_INPUT errors
        ("find", 0, {"closeConnection": True}),  # retried, then the deadline
        ("find", 2, {"errorCode": 189}),  # PrimarySteppedDown; provenance (level by level)
        ("find", 6, {"errorCode": 11600}),  # lots with their claims
    ],
)
@pytest.mark.parametrize("accept", [None, GR])
async def test_a_database_fault_in_a_heavy_query_is_typed_as_in_the_loop(
    chain, proc_http, loop_http, admin, command, query_index, fault, accept
):
    query, variables = heavy_shapes(chain)[query_index]
    async with failpoint(admin, {"failCommands": [command], **fault}):
        on_process, on_loop, executed = await both_ways(proc_http, loop_http, query, variables, accept)
    same_answer(on_process, on_loop)
    assert executed == 1
    errors = on_process.json()["errors"]
    codes = {e["extensions"]["code"] for e in errors}
    assert codes == ({"SERVICE_UNAVAILABLE", "BAD_USER_INPUT"} if query_index == 1 else {"SERVICE_UNAVAILABLE"}), errors
    assert on_process.headers["retry-after"] == "1"
    # and then it answers again
    again, _, _ = await both_ways(proc_http, loop_http, query, variables, accept)
    assert again.status_code == 200 and "SERVICE_UNAVAILABLE" not in again.text, again.text
