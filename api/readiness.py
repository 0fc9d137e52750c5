"""Readiness (`/readyz`, `/healthz`) answered from a recent database check
instead of a database round trip per probe.

The check itself (`api.store.Store.ready`: a majority-acknowledged write to
`health`, its read back and its deletion, within 2 s) is three round trips.
Under load they queue at the database behind the requests it is serving, so
a probe that ran its own check measured the database's queue, not whether
the server can serve: /healthz p99 reached 0.4-1.7 s beside 8 costly
queries (docs/performance.md), and probes arriving together each added
three more round trips to that queue. Here:

* at most one check is in flight; probes arriving meanwhile share it;
* a probe starts a new check when the latest one *started* more than
  `interval` seconds ago, and answers at once from the latest completed
  check while that new one runs;
* the latest completed check is only used while it *completed* at most
  `interval + timeout` seconds ago (the staleness bound, `max_age`); past
  that (an idle server, or a check that hangs), the probe waits for the
  check in flight, which fails by itself after `timeout` seconds.

So a 200 means a check that succeeded at most `max_age` (3 s by default)
before the answer, and a database that stops answering is reported within
`interval + timeout` of the first probe after the fault. `interval = 0`
checks on every probe (probes arriving together still share one check).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class ReadinessCheck:
    """A shared, rate-limited readiness check.

    `check(timeout)` -> True when ready; it must not raise, and must give up
    after `timeout` seconds (api.store.Store.ready does both). `clock` is a
    monotonic clock in seconds (injectable for tests)."""

    def __init__(self, check: Callable[[float], Awaitable[bool]], *, interval: float = 1.0, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.check = check
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.started_at: float | None = None  # when the latest check started
        self.completed_at: float | None = None  # when the latest completed check completed
        self.result = False
        self.checks = 0  # checks started (tests, metrics)
        self._in_flight: asyncio.Task[bool] | None = None

    @property
    def max_age(self) -> float:
        """Seconds after its completion during which a check's result is still answered."""
        return self.interval + self.timeout

    async def ready(self) -> bool:
        now = self.clock()
        if self.interval == 0 or self.started_at is None or now - self.started_at > self.interval:
            self._start()  # unless one is in flight
        if self.interval > 0 and self.completed_at is not None and now - self.completed_at <= self.max_age:
            return self.result
        return await asyncio.shield(self._in_flight)  # one probe cancelled must not cancel the others' check

    def _start(self) -> None:
        if self._in_flight is not None and not self._in_flight.done():
            return
        self.started_at = self.clock()
        self.checks += 1
        self._in_flight = asyncio.create_task(self._run(), name="oretrace-readiness-check")

    async def _run(self) -> bool:
        result = await self.check(self.timeout)
        self.result, self.completed_at = result, self.clock()
        return result

    async def close(self) -> None:
        """Cancel a check in flight (at shutdown, before the store closes)."""
        if self._in_flight is not None and not self._in_flight.done():
            self._in_flight.cancel()
            try:
                await self._in_flight
            except asyncio.CancelledError:
                pass
