"""Ingestion: envelope JSON in, one atomic write (or a typed Rejection) out.

    parse (pydantic)  ->  prefetch (store, bounded round trips)
      ->  Verifier.apply (pure, CPU heavy: rules.apply, the signature, and
          every proof of the envelope in one multi-scalar multiplication, shared
          with the publications waiting at the same time (api.verification_batches);
          run in a worker thread - or process - so the event loop keeps serving reads)
      ->  store.apply_effects (one multi-document transaction, shared with the
          publications waiting for the sequencer at the same time: group commit)

The rules see a snapshot; races between concurrent publications are settled by
the guards' unique keys inside the transaction (the loser gets CONFLICT or
REPLAYED_NONCE and nothing of it is written).

Before all of it, the envelope's event id is looked up: a resend of an accepted
envelope returns the original outcome (idempotent publication). The signer is
authenticated before the prefetch does any work that grows with the ledger
(the ancestry walk of an `ancestry_excludes` claim).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import json
import logging
import math
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import pymongo
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from crypto.batch import cores
from crypto.group import set_msm_threads
from ledger.encoding import canonical_json
from ledger.envelope import Envelope, parse_envelope
from ledger.errors import Code, Rejection

from .settings import Settings
from .store import Store, is_infrastructure_fault, service_unavailable
from .verification_batches import Verdicts, outcome, verify_publications

log = logging.getLogger("oretrace.service")


@dataclass(frozen=True)
class PublishOutcome:
    event_id: str
    type: str
    lot_ids: list[str]  # lots created by the event (issue: 1, transform: the outputs)
    claim_id: str | None = None
    attestation_id: str | None = None
    seq: int | None = None
    accepted_at: datetime | None = None
    log_index: int | None = None  # leaf index in the transparency log (docs/log.md)


def describe_validation_error(exc: ValidationError, limit: int = 8) -> str:
    """'payload.inputs: List should have at least 1 item; signature: String should match ...'"""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "envelope"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def parse_envelope_or_reject(data: Any) -> Envelope:
    if not isinstance(data, dict):
        raise Rejection(Code.MALFORMED, "the envelope must be a JSON object")
    try:
        return parse_envelope(data)
    except ValidationError as exc:
        raise Rejection(Code.MALFORMED, f"malformed envelope: {describe_validation_error(exc)}") from None
    except ValueError as exc:  # e.g. a naive timestamp rejected by a validator
        raise Rejection(Code.MALFORMED, f"malformed envelope: {exc}") from None


def verify_publication(envelope: Envelope, view, policy):
    """`ledger.rules.apply` for one envelope with all of its proofs - balance and
    zero (sigma) proofs, range proofs, the loss-cap proof, the claim proof -
    checked together in ONE multi-scalar multiplication with random weights
    (`ledger.proofs.BatchCollector`, `crypto.batch.verify_relations`).

    Returns the Effects, or raises Rejection: the rules' own (in the order they
    run), then BAD_PROOF naming the first proof that does not verify, found by
    bisection (e.g. "loss_cap_proof: ..."). Pure: nothing is written either way.
    The server verifies several envelopes at once with
    `api.verification_batches.verify_publications`, with the same verdicts.
    """
    return outcome(verify_publications([(envelope, view, policy)]).verdicts[0])


def _verify_in_worker(items) -> Verdicts:
    """Runs in a verifier process: `verify_publications`, its verdicts made fit to
    travel back. An unexpected exception of the rules on one envelope (the "error"
    verdict) that does not survive pickling (e.g. crypto's DecodeError: its
    __init__ takes two arguments) would break the whole pool, and every
    publication in flight would get SERVICE_UNAVAILABLE; it travels as a
    RuntimeError naming it instead, raised in that envelope's request only."""
    result = verify_publications(items)
    verdicts = []
    for status, value in result.verdicts:
        if status == "error":
            try:
                pickle.loads(pickle.dumps(value))
            except Exception:  # noqa: BLE001 - any failure to round-trip: send its description
                value = RuntimeError(f"{type(value).__name__}: {value}")
        verdicts.append((status, value))
    return Verdicts(verdicts, result.rounds)


def _init_verifier_process(msm_threads: int) -> None:
    """Pool initializer. A SIGKILLed server must not leave verifier processes behind
    (`supervision.children.die_with_parent`, as for the embedded database and the other
    worker processes), and a terminal's Ctrl-C, which reaches the whole process group,
    is the server's to handle: it shuts the pool down in order. Each process's MSMs use
    `msm_threads` threads (`Verifier`)."""
    import multiprocessing
    import signal

    from supervision.children import die_with_parent

    set_msm_threads(msm_threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()  # the server (a "spawn" pool's processes know it)
    die_with_parent(parent.pid if parent is not None else None)


def _warm_up() -> bool:
    """Import the ledger and precompute every generator a publication can need
    (G, H and all crypto.generators.MAX_VECTOR vector points, ~3 s once per
    process), in a fresh worker or the server, before it serves. The cache is
    thread safe either way; this keeps hash_to_curve off the first requests."""
    import ledger.rules  # noqa: F401
    from crypto.generators import precompute

    precompute()
    return True


#: The current request's deadline on the event loop's clock (`loop.time()`), for
#: `Verifier.apply` and `Store.apply_effects` (whose group-commit sequencer does not
#: see the request's `pymongo.timeout`): set by `Ingestion.publish` as
#: `pymongo.timeout` is for the database work of the same request.
VERIFY_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("oretrace_verify_deadline", default=None)


@dataclass
class _Waiting:
    """A publication waiting for its verdict (`Verifier.apply`)."""

    envelope: Envelope
    view: Any
    policy: Any
    verdict: asyncio.Future
    deadline: float | None  # the event loop's clock
    arrived: float  # the event loop's clock


class Verifier:
    """Verifies publications off the event loop, at most `workers` batches at a time.

    Cross-publication batching (`api.verification_batches`): when a worker is
    free it takes the publications waiting, up to `max_batch`, and verifies
    them together in one MSM, each with its own verdict.

    The gathering window (`gather_seconds`, setting `ORETRACE_VERIFY_GATHER_MS`):
    publications announced upstream (`upstream()`: the ingestion holds one
    such scope from parsing to the verifier, i.e. through the idempotency
    look-up and the prefetch) usually reach the verifier within a few
    milliseconds (not all do: one refused by the prefetch or a resend never
    does, an ancestry walk takes longer; the window bounds what any costs).
    While some are announced and fewer than `max_batch` wait, a free worker
    holds its batch until the oldest waiting publication has
    waited `gather_seconds`, or the batch is full, or nothing is announced any
    more, whichever comes first. The wait counts from the publication's
    arrival, or from when a worker last came free if it had to queue behind a
    busy one: with one worker, the first of a cohort can arrive while the
    previous batch is verified, and counting from its arrival would send it
    alone the moment the worker frees, ahead of the rest of its cohort
    (docs/performance.md, "Issue 11 at its close"). A publication with
    nothing announced behind it (an idle server, one publication in flight)
    is verified at once: the window only ever delays a publication while
    others are on their way to join it.
    `gather_seconds` = 0 (the constructor's default; the server passes its
    setting, 10 ms by default: docs/operations.md) is "a batch is what waits when a worker frees".

    Every MSM of a batch runs in `msm_threads` parts at once (crypto.group.
    set_msm_threads; default: the cores / `workers`, at least 1).

    * "thread" (default): anyio worker threads, ONE by default. Verification
      time is mostly arkworks multi-scalar multiplication, which releases the
      GIL, and most of an MSM is the ~1,026 shared bases, paid once per batch
      whatever its size: one lane keeps the publications in flight together
      in one batch (at 8 in flight, mean batches of 3.6-8.0 publications
      against 2.3-3.6 with two lanes, in three runs), and its MSM runs on every core
      (docs/performance.md, "One verification lane"). The event loop keeps
      serving reads meanwhile.
    * "process": a pool of spawned worker processes (not forked: the server
      has pymongo and uvicorn threads a fork would copy in a broken state).
      Full isolation from the GIL for the Python share of verification, at
      ~1 ms of pickling per envelope and ~1 s of start-up; it did not beat
      threads on 2 vCPUs, where the workers compete with the database process.
      A publication waits for its verdict until its request deadline
      (`VERIFY_DEADLINE`) at most, then gets SERVICE_UNAVAILABLE (retryable);
      a batch still running when the deadlines of all its publications have
      passed is taken as hung: the pool is killed and replaced (the next
      batch starts a new one).
    """

    def __init__(
        self,
        mode: Literal["process", "thread"] = "thread",
        workers: int | None = None,
        max_batch: int = 8,
        gather_seconds: float = 0.0,
        msm_threads: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not gather_seconds >= 0:
            raise ValueError("gather_seconds must be at least 0")
        if msm_threads is not None and (type(msm_threads) is not int or msm_threads < 1):
            raise ValueError("msm_threads must be a positive integer")
        self.mode = mode
        self.workers = workers or (1 if mode == "thread" else cores())
        self.msm_threads = msm_threads or max(1, cores() // self.workers)
        self.max_batch = max_batch
        self.gather_seconds = gather_seconds
        self._upstream = 0  # publications announced (`upstream()`), not yet waiting here
        self._gather_timer: asyncio.TimerHandle | None = None
        #: batches a free worker held back for announced publications (monitoring; tests)
        self.gathers = 0
        self._limiter = anyio.CapacityLimiter(self.workers)  # its own: not shared with other to_thread work
        #: batches verified so far, by size (monitoring; tests)
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._pool: ProcessPoolExecutor | None = None
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._running = 0
        self._freed_at = -math.inf  # when a worker last came free (the event loop's clock)
        self._tasks: set[asyncio.Task] = set()

    def _process_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_verifier_process,
                initargs=(self.msm_threads,),
            )
        return self._pool

    async def start(self) -> None:
        """Start (and warm up) the workers now rather than on the first publication."""
        if self.mode == "process":
            pool = self._process_pool()
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(pool, _warm_up) for _ in range(self.workers)))
        else:
            set_msm_threads(self.msm_threads)
            await anyio.to_thread.run_sync(_warm_up, limiter=self._limiter)

    @contextlib.contextmanager
    def upstream(self):
        """Announce a publication on its way to `apply` (the gathering window):
        hold this scope from when the publication is known until just before
        calling `apply` (no `await` between leaving it and `apply`). Leaving it
        without reaching `apply` (a rejection, an idempotent resend) is fine:
        a held batch then goes as soon as the event loop runs its callbacks."""
        self._upstream += 1
        try:
            yield
        finally:
            self._upstream -= 1
            if self._upstream == 0 and self._waiting:
                # after the current callback: a publication leaving the scope for `apply`
                # is queued by then, and joins the batch this releases
                asyncio.get_running_loop().call_soon(self._dispatch)

    async def apply(self, envelope, view, policy):
        """The Effects of `envelope`, or its Rejection (see `verify_publication`).

        In "process" mode, beyond the request's `VERIFY_DEADLINE` (set by
        `Ingestion.publish`) the answer is SERVICE_UNAVAILABLE."""
        loop = asyncio.get_running_loop()
        deadline = VERIFY_DEADLINE.get()
        waiting = _Waiting(envelope, view, policy, loop.create_future(), deadline, loop.time())
        self._waiting.append(waiting)
        self._dispatch()
        if self.mode == "process" and deadline is not None:
            try:
                return outcome(await asyncio.wait_for(waiting.verdict, max(0.0, deadline - loop.time())))
            except TimeoutError:
                log.warning("publication %s: no verdict within the request deadline", envelope.event_id)
                raise service_unavailable("verification did not finish within the request deadline") from None
        return outcome(await waiting.verdict)

    def _dispatch(self, hold: bool = True) -> None:
        """Start a batch on every free worker, of what is waiting now, unless the
        gathering window holds it (class docstring; a timer then comes back at
        the end of the window with `hold=False`)."""
        while self._running < self.workers and self._waiting:
            while self._waiting and self._waiting[0].verdict.done():  # cancelled or timed out meanwhile
                self._waiting.popleft()
            if not self._waiting or (hold and self._gathering()):
                return
            if self._gather_timer is not None:  # the hold ended early (full, or nothing announced)
                self._gather_timer.cancel()  # its timer must not cut the next hold short
                self._gather_timer = None
            batch: list[_Waiting] = []
            while self._waiting and len(batch) < self.max_batch:
                waiting = self._waiting.popleft()
                if not waiting.verdict.done():  # its request was cancelled or timed out meanwhile
                    batch.append(waiting)
            if batch:
                self._running += 1
                task = asyncio.get_running_loop().create_task(self._run(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _gathering(self) -> bool:
        """Should a free worker hold the waiting publications for those announced
        upstream? If so, a timer ends the hold at the end of the oldest one's window."""
        if self.gather_seconds <= 0 or self._upstream == 0:
            return False
        if sum(not w.verdict.done() for w in self._waiting) >= self.max_batch:
            return False
        loop = asyncio.get_running_loop()
        # from the oldest one's arrival, or from when a worker came free for it if it had
        # to wait for one: a publication that queued behind a busy worker may still be
        # joined by the others of its cohort, at most one window after it could have gone
        ends = max(self._waiting[0].arrived, self._freed_at) + self.gather_seconds
        if loop.time() >= ends:
            return False
        if self._gather_timer is None:
            self.gathers += 1
            self._gather_timer = loop.call_at(ends, self._end_gathering)
        return True

    def _end_gathering(self) -> None:
        self._gather_timer = None
        self._dispatch(hold=False)

    async def _run(self, batch: list[_Waiting]) -> None:
        self.batch_sizes[len(batch)] += 1
        items = [(w.envelope, w.view, w.policy) for w in batch]
        try:
            if self.mode == "thread":
                verdicts = await anyio.to_thread.run_sync(verify_publications, items, limiter=self._limiter)
            else:
                verdicts = await self._run_in_process(batch, items)
        except BaseException as exc:  # incl. this task cancelled at shutdown: no request waits forever
            for waiting in batch:
                if not waiting.verdict.done():
                    # one exception object per request: each is raised in its own task
                    if isinstance(exc, Rejection):
                        waiting.verdict.set_exception(Rejection(exc.code, exc.message))
                    elif isinstance(exc, Exception):
                        waiting.verdict.set_exception(exc)
                    else:
                        waiting.verdict.set_exception(service_unavailable("the verifier was stopped"))
            if not isinstance(exc, Exception):
                raise
        else:
            for waiting, verdict in zip(batch, verdicts.verdicts, strict=True):
                if not waiting.verdict.done():
                    waiting.verdict.set_result(verdict)
        finally:
            self._running -= 1
            self._freed_at = asyncio.get_running_loop().time()
            self._dispatch()

    async def _run_in_process(self, batch: list[_Waiting], items: list) -> Verdicts:
        loop = asyncio.get_running_loop()
        pool = self._process_pool()
        deadlines = [w.deadline for w in batch]
        limit = None if None in deadlines else max(0.0, max(deadlines) - loop.time())  # type: ignore[type-var]
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool, _verify_in_worker, items), limit)
        except BrokenProcessPool as exc:
            # A worker died (killed, out of memory, a crash in native code): the
            # executor refuses all work from now on. Not the envelopes' fault:
            # retryable, nothing was written, and the next batch starts a new pool.
            log.warning("verifier process died (%d publications): %s", len(batch), exc)
            self._discard_pool(pool, kill=False)
            raise service_unavailable("the verifier process stopped") from None
        except TimeoutError:
            # No request of the batch can use its verdicts any more: the worker is
            # taken as hung. Killing the pool's processes also fails a batch running
            # in another of its workers (BrokenProcessPool: SERVICE_UNAVAILABLE).
            log.warning("verifier process hung past the request deadline (%d publications): replaced", len(batch))
            self._discard_pool(pool, kill=True)
            raise service_unavailable("verification did not finish within the request deadline") from None

    def _discard_pool(self, pool: ProcessPoolExecutor, kill: bool) -> None:
        if self._pool is pool:
            self._pool = None
        if kill:
            for process in list(pool._processes.values()):  # the executor's own table of live workers
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@dataclass
class Ingestion:
    store: Store
    settings: Settings
    verifier: Verifier = field(default=None)  # type: ignore[assignment]
    _closed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        # group commit (Store.apply_effects): the store's transactions take this many publications
        self.store.max_publications_per_transaction = self.settings.max_publications_per_transaction
        if self.verifier is None:
            self.verifier = Verifier(
                self.settings.verify_mode,
                self.settings.verify_workers,
                self.settings.verify_max_batch,
                self.settings.verify_gather_ms / 1000,
                self.settings.msm_threads,
            )

    async def start(self) -> None:
        await self.verifier.start()

    def batching(self) -> dict[str, Any]:
        """How publications were grouped since the start (monitoring): verification batches
        by size (`verify_batches`, {publications: batches}), how often a free verifier held
        a batch for announced publications (`gathers`), and committed transactions by the
        number of publications each wrote (`transactions`, group commit)."""
        return {
            "verify_batches": dict(sorted(self.verifier.batch_sizes.items())),
            "gathers": self.verifier.gathers,
            "transactions": dict(sorted(self.store.stats.batch_sizes.items())),
        }

    def close(self) -> None:
        """Stop the verifiers; log `batching()` (INFO, one JSON line) if anything was verified,
        at the first close only (closing again stops nothing more and logs nothing)."""
        try:
            if self.verifier.batch_sizes and not self._closed:
                log.info("ingestion batching %s", json.dumps(self.batching(), sort_keys=True))
        finally:  # the verifiers stop whatever the logging does
            self._closed = True
            self.verifier.close()

    def policy(self, now: datetime | None = None):
        from ledger.rules import Policy

        return Policy(
            network=self.settings.network,
            root_public_key=self.settings.require_root_public_key(),
            now=now or datetime.now(UTC),
            max_clock_skew=self.settings.limits.max_clock_skew,
        )

    async def publish(self, data: Any, expected_type: str | None = None) -> PublishOutcome:
        """Validate and write one signed envelope; its outcome, or Rejection.

        Idempotent: an envelope already accepted (same event id and the same
        signed JSON) returns its original outcome, looked up before the rules
        run (a resend after a lost answer, OUTCOME_UNKNOWN or SERVICE_UNAVAILABLE);
        a different envelope reusing a nonce is still REPLAYED_NONCE. All database
        work runs within `settings.request_deadline_seconds` (pymongo CSOT), and
        so does the wait for a verifier process (`VERIFY_DEADLINE`);
        infrastructure faults are SERVICE_UNAVAILABLE (nothing written) or
        OUTCOME_UNKNOWN (see Store.apply_effects)."""
        envelope = parse_envelope_or_reject(data)
        payload_type = envelope.payload.type
        if expected_type is not None and payload_type != expected_type:
            raise Rejection(
                Code.MALFORMED,
                f"this mutation takes a '{expected_type}' payload, the envelope carries '{payload_type}'",
            )
        token = VERIFY_DEADLINE.set(asyncio.get_running_loop().time() + self.settings.request_deadline_seconds)
        with pymongo.timeout(self.settings.request_deadline_seconds):
            try:
                return await self._publish(envelope)
            except PyMongoError as exc:
                if not is_infrastructure_fault(exc):
                    raise
                log.warning("publication %s: database unavailable: %s", envelope.event_id, exc)
                raise service_unavailable("the database is unavailable") from exc
            finally:
                VERIFY_DEADLINE.reset(token)

    async def _publish(self, envelope: Envelope) -> PublishOutcome:
        from ledger import rules

        # the rules' own signer check (network, freshness, registered signer, valid
        # key, signature), run before the ancestry walk; `apply` repeats it, the
        # signature then found valid under the same key (`signature_is_valid` memo)
        authenticate_signer = rules._authenticate

        with self.verifier.upstream():  # on its way to the verifier (its gathering window)
            original = await self._original_outcome(envelope)
            if original is not None:
                return original
            policy = self.policy()
            view = await self.store.prefetch(
                rules.references(envelope), authenticate=lambda v: authenticate_signer(envelope, v, policy)
            )
        effects = await self.verifier.apply(envelope, view, policy)
        try:
            applied = await self.store.apply_effects(effects, view, deadline=VERIFY_DEADLINE.get())
        except Rejection as rejection:
            # two identical envelopes racing: the loser finds the winner's event; or this one,
            # committed by a batch whose commit answer was lost (Store.apply_effects)
            if rejection.code is not Code.REPLAYED_NONCE:
                raise
            try:
                original = await self._original_outcome(envelope)
            except PyMongoError as exc:  # e.g. past the deadline: never "nothing was written"
                if not is_infrastructure_fault(exc):
                    raise
                log.warning("publication %s: its nonce is taken and its outcome unreadable: %s", envelope.event_id, exc)
                raise Rejection(
                    Code.OUTCOME_UNKNOWN,
                    "the envelope's nonce is taken, perhaps by this very envelope, and its original outcome "
                    "could not be read: the publication may have landed; resubmitting the same envelope is "
                    "safe (it returns the original outcome)",
                ) from exc
            if original is not None:
                return original
            raise
        return PublishOutcome(
            event_id=effects.event_id,
            type=effects.event_type,
            lot_ids=[lot.lot_id for lot in effects.new_lots],
            claim_id=effects.claims[0].claim_id if effects.claims else None,
            attestation_id=effects.attestations[0].attestation_id if effects.attestations else None,
            seq=applied.seq,
            accepted_at=applied.accepted_at,
            log_index=applied.log_index,
        )

    async def _original_outcome(self, envelope: Envelope) -> PublishOutcome | None:
        """The outcome of this exact envelope if it was already accepted."""
        accepted = await self.store.accepted_publication(envelope.event_id)
        if accepted is None or canonical_json(accepted.envelope) != canonical_json(envelope.to_json()):
            return None
        return PublishOutcome(
            event_id=accepted.event_id,
            type=accepted.type,
            lot_ids=accepted.lot_ids,
            claim_id=accepted.claim_id,
            attestation_id=accepted.attestation_id,
            seq=accepted.seq,
            accepted_at=accepted.accepted_at,
            log_index=accepted.log_index,
        )
