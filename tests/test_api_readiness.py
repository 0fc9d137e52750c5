"""/readyz and /healthz answer from a shared, recent database check
(api.readiness.ReadinessCheck): the staleness bound, the sharing of one check
by concurrent probes, and failures reported. A fake clock and a check held by
an event make every case a matter of ordering, never of timing."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from api.app import create_app
from api.readiness import ReadinessCheck


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HeldCheck:
    """A database check whose answer the test gives (`answer(True/False)`)."""

    def __init__(self) -> None:
        self.calls = 0
        self.timeouts: list[float] = []
        self._answers: asyncio.Queue[bool] = asyncio.Queue()

    async def __call__(self, timeout: float) -> bool:
        self.calls += 1
        self.timeouts.append(timeout)
        return await self._answers.get()

    def answer(self, ready: bool) -> None:
        self._answers.put_nowait(ready)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def readiness(interval: float = 1.0, timeout: float = 2.0) -> tuple[ReadinessCheck, HeldCheck, FakeClock]:
    check, clock = HeldCheck(), FakeClock()
    return ReadinessCheck(check, interval=interval, timeout=timeout, clock=clock), check, clock


async def test_concurrent_probes_share_one_check() -> None:
    ready, check, _ = readiness()
    probes = [asyncio.create_task(ready.ready()) for _ in range(5)]
    await settle()
    assert check.calls == 1 and not any(p.done() for p in probes)  # the first check: everybody waits for it
    check.answer(True)
    assert await asyncio.gather(*probes) == [True] * 5
    assert check.timeouts == [2.0]


@pytest.mark.parametrize("result", [True, False])
async def test_within_the_interval_the_latest_result_is_answered(result: bool) -> None:
    ready, check, clock = readiness()
    check.answer(result)
    assert await ready.ready() is result
    for step in (0.1, 0.5, 0.4):  # up to exactly the interval after the check started
        clock.now += step
        assert await ready.ready() is result
    assert check.calls == 1


async def test_after_the_interval_a_new_check_starts_and_the_probe_does_not_wait_for_it() -> None:
    ready, check, clock = readiness()
    check.answer(True)
    assert await ready.ready() is True
    clock.now += 1.5  # past the interval, within max_age (3 s) of the completion
    probe = asyncio.create_task(ready.ready())
    await settle()
    assert probe.done() and probe.result() is True  # answered from the latest check ...
    assert check.calls == 2  # ... while a new one runs
    check.answer(False)  # that one finds the database broken
    await settle()
    assert await ready.ready() is False  # the next probe reports it


async def test_a_result_older_than_the_staleness_bound_is_never_answered() -> None:
    ready, check, clock = readiness(interval=1.0, timeout=2.0)
    check.answer(True)
    assert await ready.ready() is True
    assert ready.max_age == 3.0
    clock.now += 3.01  # the check completed more than interval + timeout ago
    probe = asyncio.create_task(ready.ready())
    await settle()
    assert not probe.done() and check.calls == 2  # waits for the new check
    check.answer(False)
    assert await probe is False


async def test_a_hung_check_makes_probes_wait_for_it_once_the_result_is_too_old() -> None:
    """A check in flight is not restarted; once the latest result passes its bound,
    probes wait for that check (which fails by itself after its timeout)."""
    ready, check, clock = readiness()
    check.answer(True)
    assert await ready.ready() is True
    clock.now += 1.5
    assert await ready.ready() is True  # starts check 2, which hangs
    clock.now += 2.0  # 3.5 s after the completion of check 1
    probes = [asyncio.create_task(ready.ready()) for _ in range(3)]
    await settle()
    assert check.calls == 2 and not any(p.done() for p in probes)
    check.answer(False)  # the hung check times out: not ready
    assert await asyncio.gather(*probes) == [False] * 3


async def test_interval_zero_checks_on_every_probe() -> None:
    ready, check, _ = readiness(interval=0)
    for result in (True, False, True):
        check.answer(result)
        assert await ready.ready() is result
    assert check.calls == 3


async def test_a_cancelled_probe_does_not_cancel_the_shared_check() -> None:
    ready, check, _ = readiness()
    first = asyncio.create_task(ready.ready())
    second = asyncio.create_task(ready.ready())
    await settle()
    first.cancel()
    await settle()
    check.answer(True)
    assert await second is True


async def test_close_cancels_a_check_in_flight() -> None:
    ready, check, _ = readiness()
    probe = asyncio.create_task(ready.ready())
    await settle()
    await ready.close()
    with pytest.raises(asyncio.CancelledError):
        await probe


# --------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
async def app_client(api_settings, store):
    app = create_app(api_settings, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield app, client
    await app.state.runtime.stop()  # readiness check, query worker, ingestion pool (not the store)


async def test_readiness_answers_from_one_check_for_many_probes(app_client) -> None:
    app, client = app_client
    runtime = app.state.runtime
    answers = await asyncio.gather(*(client.get(path) for path in ("/healthz", "/readyz") * 10))
    assert [a.status_code for a in answers] == [200] * 20
    assert runtime.readiness.checks <= 2  # one check (two if the interval passed meanwhile on a slow machine)


async def test_a_restarting_database_is_503_at_once_whatever_the_latest_check(app_client) -> None:
    app, client = app_client
    runtime = app.state.runtime
    assert (await client.get("/healthz")).status_code == 200
    checks = runtime.readiness.checks
    runtime.database_down = True
    try:
        for path in ("/healthz", "/readyz"):
            response = await client.get(path)
            assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        assert (await client.get("/livez")).status_code == 200
    finally:
        runtime.database_down = False
    assert runtime.readiness.checks == checks  # answered without a database round trip
    assert (await client.get("/readyz")).status_code == 200
