"""A verifier process that dies is an infrastructure fault, not the envelope's.

`api.service.Verifier` in "process" mode runs `verify_publication` in spawned
worker processes. A worker killed (OOM killer, a crash in native code, an
operator) breaks the whole `ProcessPoolExecutor`: without care, every
publication from then on fails with `BrokenProcessPool`, an untyped error (a
5xx). These tests kill the worker on the real ingestion service (embedded
database) - while it is idle, and with a publication in flight - and check
that the publication is refused with SERVICE_UNAVAILABLE (retryable, nothing
written) and that the same envelope then lands on retry, on a fresh pool.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ledger.errors import Code, Rejection

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def kill_workers(verifier) -> list[int]:
    """SIGKILL every process of the verifier's pool; their pids."""
    pids = list(verifier._pool._processes)  # the executor's own table of live workers
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


async def event_count(store) -> int:
    return await store.db["events"].count_documents({})


@pytest.mark.parametrize("when", ["idle", "in_flight"])
async def test_a_killed_verifier_process_is_service_unavailable_then_retry_lands(
    store, api_settings, world, when
) -> None:
    from api.service import Ingestion, Verifier

    ingestion = Ingestion(store, api_settings, Verifier("process", workers=1))
    try:
        await ingestion.start()
        envelope = world.register(f"vp-fault-{when}", "oem").to_json()
        before = await event_count(store)
        if when == "idle":
            kill_workers(ingestion.verifier)
            await asyncio.sleep(0.2)  # let the executor notice (either way must be handled)
            publishing = ingestion.publish(envelope)
        else:
            publishing = asyncio.ensure_future(ingestion.publish(envelope))
            await asyncio.sleep(0)  # submitted to the pool
            kill_workers(ingestion.verifier)
        try:
            await publishing
        except Rejection as rejection:
            assert rejection.code is Code.SERVICE_UNAVAILABLE, rejection
            assert await event_count(store) == before  # nothing written
        else:  # the kill came after the verification had finished: it must have landed once
            assert when == "in_flight"
        outcome = await ingestion.publish(envelope)  # a retry of the same envelope, on a fresh pool
        assert outcome.type == "register_organization"
        assert await event_count(store) == before + 1
    finally:
        ingestion.close()
