"""Many proofs, one multi-scalar multiplication: random-weight batch verification.

Every proof this library verifies ends in one *relation*: a sum
sum_i k_i P_i that must be the identity, with scalars k_i the verifier
computes (from its own transcript) and points P_i taken from the statement,
the proof and the fixed generators. `Relation` is that shape:

* `terms(weights)` gives the relation scaled by verifier weights: coefficients
  of the Bulletproof vectors G_i and H_i (`g_vec`, `h_vec`), of the Pedersen
  bases G and H (`g`, `h`), and of the other points (`points`, `scalars`);
* `weight_count` is how many independent weights it takes (a Bulletproof 2:
  its inner-product and t-polynomial equations; a ZeroProof k: one per point;
  an OpeningProof 1);
* `binding` is a challenge drawn from the proof's own transcript after the
  verifier replayed it, so it binds statement, context and every proof byte;
* `proof_points` are the points the proof carries (not the statement's);
* optionally, `split_terms(weights)` gives `terms` without `g_vec`/`h_vec`
  plus a picklable (function, args) that computes those two lists: the
  O(nm) arithmetic of a range proof, which worker processes then run while
  this process folds the rest (`_fold`);
* optionally, the relation's class has `prepare_batch(relations)`, called once
  per batch with all relations of that class before any `terms`: work
  shared by the whole batch (range proofs: ONE modular inversion for the
  challenges of every proof, Montgomery's trick).

`verify_relations` checks a list of relations at once:

1. A batch transcript absorbs the count and every relation's `binding`; its
   `rng` mixes in 32 bytes of OS randomness, and yields one non-zero weight
   per equation (`Transcript.rng`). A prover who knows neither the OS bytes
   nor the weights cannot make false relations cancel: if any relation is
   false, the weighted sum is the identity with probability at most 1/r per
   false equation (r ~ 2^255, Schwartz-Zippel over the weights).
2. The weighted relations are folded into ONE multi-scalar multiplication:
   coefficients of the shared bases (G, H, G_i, H_i) and of points that occur
   in several relations (the same commitment in a range and a balance proof,
   keyed by the 48-byte encoding) are summed, so each distinct point appears
   once.
3. If the sum is not the identity, the failing relation is found by
   bisection over the *same* weights: check the left half; if it holds the
   first false relation is in the right half, else in the left. That is
   log2(k) multiplications of halving size, about one more full MSM in all
   (never a second pass proof by one proof). The relation found is checked
   alone; it is reported as `BatchFailure(index, reason)`, `index` being its
   position in the list, the *first* false one in list order.

Deferred points (`crypto.group.deferred_decoding`) enter the MSM as bytes:
`DeferredPoints` decodes each distinct encoding once - in this process, or in
worker processes that also multiply their share of the points - and a point
that does not decode fails the first relation that holds it, with the decoding
error. Worker processes: see `WorkerPool` and docs/performance.md.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import add
from pathlib import Path
from typing import Any, Protocol

from supervision.children import Child, ChildFailed, environment, serve

from .errors import DecodeError
from .generators import G, H, bulletproof_generators
from .group import ORDER, Point, backend, decode_checked, get_backend, msm, use_backend
from .transcript import Transcript

BATCH_DOMAIN = b"oretrace-proof-batch-v1"

__all__ = [
    "Terms",
    "Relation",
    "BatchFailure",
    "DeferredPoints",
    "WorkerPool",
    "verify_relations",
    "holds_alone",
    "shared_pool",
    "check_settings",
    "WorkerSettingError",
    "most_workers",
]


@dataclass(frozen=True)
class Terms:
    """A relation sum == identity, as coefficients (scalars mod r, any int accepted).

    g_vec[i] / h_vec[i] multiply the Bulletproof generators G_i / H_i
    (`crypto.generators.bulletproof_generators`); g / h multiply the Pedersen
    G / H; scalars[j] multiplies points[j].
    """

    g_vec: Sequence[int]
    h_vec: Sequence[int]
    g: int
    h: int
    points: Sequence[Point]
    scalars: Sequence[int]


class Relation(Protocol):
    """One proof's verification equation, ready for `verify_relations`."""

    @property
    def weight_count(self) -> int: ...

    @property
    def binding(self) -> bytes: ...

    @property
    def proof_points(self) -> Sequence[Point]:
        """The points the proof itself carries (those `DeferredPoints.add` may take ahead)."""
        ...

    def terms(self, weights: Sequence[int]) -> Terms: ...


def _prepare(relations: Sequence[Relation]) -> None:
    """Call each relation class's optional `prepare_batch` once, with its relations."""
    by_kind: dict[Any, list[Relation]] = {}
    for rel in relations:
        prepare = getattr(type(rel), "prepare_batch", None)
        if prepare is not None:
            by_kind.setdefault(prepare, []).append(rel)
    for prepare, rels in by_kind.items():
        prepare(rels)


class BatchFailure(Exception):
    """relations[index] does not hold (`reason` says how it was found out)."""

    def __init__(self, index: int, reason: str):
        self.index = index
        self.reason = reason
        super().__init__(f"relation #{index}: {reason}")


# --------------------------------------------------------------------------- folding


@dataclass
class _Folded:
    """A weighted sum of relations as one MSM, split into decoded and deferred points."""

    g_vec: list[int]
    h_vec: list[int]
    g: int
    h: int
    decoded: dict[bytes, list]  # encoding -> [Point, coefficient]
    deferred: dict[bytes, int]  # encoding -> coefficient
    first_holder: dict[bytes, int]  # deferred encoding -> index of the first relation holding it


def _add_into(acc: list[int], values: Sequence[int]) -> None:
    """acc[i] += values[i], growing acc with zeros as needed (`operator.add`: a C
    function, about twice as fast per item here as the slot wrapper `int.__add__`)."""
    n = len(values)
    if n > len(acc):
        acc += [0] * (n - len(acc))
    acc[:n] = map(add, acc[:n], values)


#: Vector jobs (`split_terms`) per message to a worker.
_JOBS_PER_MESSAGE = 32


def _fold(
    relations: Sequence[Relation], weights: Sequence[Sequence[int]], offset: int = 0, remote: DeferredPoints | None = None
) -> _Folded:
    """The weighted sum of `relations` as one MSM. With `remote` (a DeferredPoints
    with worker processes), relations that offer `split_terms` have their G_i / H_i
    coefficients - the O(nm) Python arithmetic of a range proof - computed by the
    workers while this process folds the rest."""
    f = _Folded([], [], 0, 0, {}, {}, {})
    jobs: list = []
    try:
        for idx, (rel, w) in enumerate(zip(relations, weights, strict=True)):
            split = getattr(rel, "split_terms", None) if remote is not None else None
            if split is None:
                t = rel.terms(w)
                _add_into(f.g_vec, t.g_vec)
                _add_into(f.h_vec, t.h_vec)
            else:
                t, job = split(w)
                jobs.append(job)
                if len(jobs) == _JOBS_PER_MESSAGE:
                    remote.send_vector_jobs(jobs)
                    jobs = []
            f.g += t.g
            f.h += t.h
            for p, k in zip(t.points, t.scalars, strict=True):
                enc = p.to_bytes()
                if p.is_deferred():
                    f.deferred[enc] = f.deferred.get(enc, 0) + k
                    f.first_holder.setdefault(enc, offset + idx)
                elif not p.is_identity():
                    slot = f.decoded.get(enc)
                    if slot is None:
                        f.decoded[enc] = [p, k]
                    else:
                        slot[1] += k
        if jobs:
            remote.send_vector_jobs(jobs)
    except BaseException:
        if remote is not None:  # replies would be left unread: the pool goes (DeferredPoints._send)
            remote.abandon()
        raise
    if remote is not None:
        g_vec, h_vec = remote.collect_vectors()
        _add_into(f.g_vec, g_vec)
        _add_into(f.h_vec, h_vec)
    return f


def _local_sum(f: _Folded) -> Point:
    gs, hs = bulletproof_generators(len(f.g_vec))
    pts = [*gs, *hs, G(), H()]
    ks = [*f.g_vec, *f.h_vec, f.g, f.h]
    for p, k in f.decoded.values():
        pts.append(p)
        ks.append(k)
    return msm(pts, ks)  # the backend reduces every coefficient mod r once


def _holds(f: _Folded, deferred: DeferredPoints) -> bool:
    """Is the folded sum the identity? _BadPoints if a deferred point does not decode."""
    if not f.deferred:
        return _local_sum(f).is_identity()
    handle = deferred.start_msm(f.deferred)  # workers multiply while this process does its part
    try:
        local = _local_sum(f)
    except BaseException:  # their replies would be left unread: the pool goes (DeferredPoints._send)
        deferred.abandon()
        raise
    return (local + deferred.finish_msm(handle)).is_identity()


def _draw_weights(relations: Sequence[Relation]) -> list[list[int]]:
    bt = Transcript(BATCH_DOMAIN, b"")
    bt.append_u64(b"count", len(relations))
    for rel in relations:
        bt.append_message(b"binding", rel.binding)
    rng = bt.rng([])  # + OS randomness: the prover cannot predict the weights
    return [rng.scalars(rel.weight_count) for rel in relations]


def verify_relations(relations: Sequence[Relation], deferred: DeferredPoints | None = None) -> None:
    """Check every relation with one multi-scalar multiplication (module docstring).

    `deferred` holds the deferred points the relations use (a fresh in-process
    one if None). Raises BatchFailure(index, reason) naming the first false
    relation (or the first relation holding a point that does not decode).
    """
    relations = list(relations)
    if not relations:
        return
    deferred = deferred if deferred is not None else DeferredPoints()
    _prepare(relations)
    weights = _draw_weights(relations)
    try:
        if _holds(_fold(relations, weights, remote=deferred if deferred.has_workers() else None), deferred):
            return
    except _BadPoints as bad:
        f = _fold(relations, weights)
        index = min(f.first_holder[enc] for enc in bad.reasons)
        enc = next(e for e in bad.reasons if f.first_holder[e] == index)
        raise BatchFailure(index, f"malformed point in the proof: {bad.reasons[enc]}") from None
    # Bisection: relations[lo:hi] is known to fail.
    lo, hi = 0, len(relations)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _holds(_fold(relations[lo:mid], weights[lo:mid], lo), deferred):
            lo = mid
        else:
            hi = mid
    if _holds(_fold(relations[lo:hi], weights[lo:hi], lo), deferred):  # only if the weights were unlucky
        raise BatchFailure(lo, "the batch fails but no single proof could be named (retry)")
    raise BatchFailure(lo, "the verification equation does not hold")


def holds_alone(relation: Relation) -> bool:
    """Check one relation with fresh random weights (one MSM). DecodeError on a bad deferred point."""
    try:
        return _holds(_fold([relation], _draw_weights([relation])), DeferredPoints())
    except _BadPoints as bad:
        raise DecodeError("point", next(iter(bad.reasons.values()))) from None


# --------------------------------------------------------------------------- deferred points


class _BadPoints(Exception):
    def __init__(self, reasons: dict[bytes, str]):
        self.reasons = reasons


class DeferredPoints:
    """The deferred points of one verification, each decoded once.

    Without a pool they are decoded in this process when first multiplied.
    With a `WorkerPool`, `add` streams each new distinct encoding to a worker
    process as soon as a proof is read (workers decode while this process
    replays transcripts); `start_msm`/`finish_msm` then have each worker
    multiply the points it holds, and the partial sums are added here.
    """

    def __init__(self, pool: WorkerPool | Callable[[], WorkerPool | None] | None = None, *, start_after: int = 0):
        """`pool`: a WorkerPool, or a function returning one (or None), called
        once `start_after` distinct deferred points have been added: starting
        worker processes costs more than decoding a small batch here."""
        self._pool: WorkerPool | None = None
        self._pending = pool if callable(pool) and not isinstance(pool, WorkerPool) else None
        self._start_after = start_after
        self._backlog: dict[bytes, None] = {}  # distinct encodings added before the pool started
        self._where: dict[bytes, tuple[int, int]] = {}  # encoding -> (worker, position)
        self._local: dict[bytes, Any] = {}  # encoding -> native point or DecodeError (no pool)
        if isinstance(pool, WorkerPool):
            self._attach(pool)

    def _attach(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._buffers: list[list[bytes]] = [[] for _ in pool.workers]
        self._sizes = [0] * len(pool.workers)
        self._next = 0
        self._next_job = 0
        self._vector_replies: list[int] = []
        try:
            pool.reset()
        except BaseException:  # see _send
            pool.discard()
            raise

    def add(self, points: Sequence[Point]) -> None:
        """Register the deferred points among `points` (others are ignored)."""
        if self._pool is None:
            if self._pending is None:
                return
            for p in points:
                if p.is_deferred():
                    self._backlog[p.to_bytes()] = None
            if len(self._backlog) < self._start_after:
                return
            pool, self._pending = self._pending(), None
            if pool is None:
                return
            self._attach(pool)
            points = [_deferred(enc) for enc in self._backlog]
            self._backlog = {}
        for p in points:
            if not p.is_deferred():
                continue
            enc = p.to_bytes()
            if enc in self._where:
                continue
            w = self._next
            self._next = (w + 1) % len(self._buffers)
            self._where[enc] = (w, self._sizes[w])
            self._sizes[w] += 1
            buf = self._buffers[w]
            buf.append(enc)
            if len(buf) >= _CHUNK:
                self._send(w, ("load", buf))
                self._buffers[w] = []

    def has_workers(self) -> bool:
        """True once worker processes hold (some of) these points."""
        return self._pool is not None

    def send_vector_jobs(self, jobs: list) -> None:
        """Have a worker compute and add up `jobs` ((function, args) -> (g_vec, h_vec)
        coefficient lists, `Relation.split_terms`); collect with `collect_vectors`.
        Workers answer only when collected, so a stream of jobs never waits for
        replies (nor fills the pipes both ways at once)."""
        w = self._next_job
        self._next_job = (w + 1) % len(self._buffers)
        self._send(w, ("vectors", jobs))
        if w not in self._vector_replies:
            self._vector_replies.append(w)

    def collect_vectors(self) -> tuple[list[int], list[int]]:
        """The sums of every job sent since the last collection (empty lists if none)."""
        g_vec: list[int] = []
        h_vec: list[int] = []
        workers, self._vector_replies = self._vector_replies, []
        for w in workers:
            self._send(w, ("collect",))
        for w in workers:
            g, h = self._recv(w)
            _add_into(g_vec, g)
            _add_into(h_vec, h)
        return g_vec, h_vec

    def abandon(self) -> None:
        """Give up on the replies owed by the workers (an exception is on its way out):
        the pool is discarded, never left with unread replies in its pipes (see _send).
        Collecting them instead could raise WorkerFailed in place of that exception
        (a KeyboardInterrupt would become a verification started again in-process)."""
        if self._pool is not None and not self._pool.broken:
            self._pool.discard()

    # Any exception in the middle of a send or a wait (not only WorkerFailed: also a
    # KeyboardInterrupt, an OverflowError...) may leave a frame half written or a reply
    # unread, which the pool's next user would take for the answer to its own request:
    # the pool is discarded (its workers killed) whatever the exception.
    def _send(self, w: int, msg) -> None:
        try:
            self._pool.workers[w].send(msg)
        except BaseException:
            self._pool.discard()
            raise

    def _recv(self, w: int):
        try:
            return self._pool.workers[w].recv()
        except BaseException:
            self._pool.discard()
            raise

    def _flush(self) -> None:
        for w, buf in enumerate(self._buffers):
            if buf:
                self._send(w, ("load", buf))
                self._buffers[w] = []

    def start_msm(self, coefficients: dict[bytes, int]) -> Any:
        if self._pool is None:
            return coefficients
        missing = [enc for enc in coefficients if enc not in self._where]
        if missing:  # points not streamed through add(): place them now
            self.add([_deferred(enc) for enc in missing])
        self._flush()
        jobs: list[tuple[list[int], list[int]]] = [([], []) for _ in self._pool.workers]
        for enc, k in coefficients.items():
            w, pos = self._where[enc]
            jobs[w][0].append(pos)
            jobs[w][1].append(k % ORDER)
        busy = []
        for w, (positions, scalars) in enumerate(jobs):
            if positions:
                self._send(w, ("msm", positions, scalars))
                busy.append(w)
        return busy

    def finish_msm(self, handle: Any) -> Point:
        if self._pool is None:
            return self._local_msm(handle)
        total = Point.identity()
        bad: dict[bytes, str] = {}
        for w in handle:
            status, value = self._recv(w)
            if status == "ok":
                total = total + Point.from_bytes(value, allow_identity=True)
            else:
                bad.update(value)
        if bad:
            raise _BadPoints(bad)
        return total

    def _local_msm(self, coefficients: dict[bytes, int]) -> Point:
        b = backend()
        bad: dict[bytes, str] = {}
        pts, ks = [], []
        for enc, k in coefficients.items():
            native = self._local.get(enc)
            if native is None:
                try:
                    native = decode_checked(b, enc)
                except DecodeError as exc:
                    native = exc
                self._local[enc] = native
            if isinstance(native, DecodeError):
                bad[enc] = native.reason
            else:
                pts.append(Point(b, native, enc))
                ks.append(k)
        if bad:
            raise _BadPoints(bad)
        return msm(pts, ks)


def _deferred(enc: bytes) -> Point:
    return Point(backend(), None, enc)


# --------------------------------------------------------------------------- worker processes

#: Encodings per message to a worker: large enough to amortise pickling and
#: the pipe round trip, small enough that workers start decoding early.
_CHUNK = 256


def _worker_main(backend_name: str) -> None:
    """A worker (`supervision.children.serve`): decodes (fully checked) the encodings it
    is sent, multiplies on request.

    Messages: ("reset",) forget every point; ("load", [encoding, ...]) decode
    and append; ("msm", positions, scalars) answer ("ok", encoded sum) or
    ("bad", {encoding: reason}) if a point at one of the positions did not
    decode; ("vectors", [(function, args), ...]) add the jobs' coefficient lists
    (`Relation.split_terms`) to running sums, no answer; ("collect",) answer
    those sums (g_vec, h_vec), reduced mod r, and start new ones. End of file: exit.
    """
    use_backend(backend_name)
    b = get_backend(backend_name)
    points: list[Any] = []
    bad: dict[int, tuple[bytes, str]] = {}
    sums: tuple[list[int], list[int]] = ([], [])

    def handle(msg):
        nonlocal sums
        if msg[0] == "reset":
            points.clear()
            bad.clear()
            sums = ([], [])
        elif msg[0] == "load":
            for enc in msg[1]:
                try:
                    points.append(decode_checked(b, enc))
                except DecodeError as exc:
                    bad[len(points)] = (enc, exc.reason)
                    points.append(None)
        elif msg[0] == "vectors":
            for function, args in msg[1]:
                g, h = function(*args)
                _add_into(sums[0], g)
                _add_into(sums[1], h)
        elif msg[0] == "collect":
            (g_vec, h_vec), sums = sums, ([], [])
            return [k % ORDER for k in g_vec], [k % ORDER for k in h_vec]
        elif msg[0] == "msm":
            positions, scalars = msg[1], msg[2]
            failed = {bad[p][0]: bad[p][1] for p in positions if p in bad}
            if failed:
                return "bad", failed
            return "ok", b.encode(b.msm([points[p] for p in positions], scalars))
        return None

    serve(handle)


class WorkerFailed(RuntimeError):
    """A verification worker process died, hung or its pipe broke (the pool is discarded),
    or the pool's workers could not all be started (out of processes, memory or descriptors)."""


#: Time limit of one wait on a worker (a send that finds its pipe full, or a
#: reply), in seconds: WORKER_WAIT_BASE_S plus WORKER_WAIT_PER_UNIT_S per unit
#: of work the worker was sent since its last reply (`_Worker.pending`: a point
#: to decode, a point to multiply, a coefficient job). A unit costs 0.02-0.2 ms
#: on a quiet core (a checked decoding ~0.1 ms, a point of a Pippenger MSM
#: ~0.02 ms, a range proof's coefficient job 0.1-0.2 ms), so the limit allows
#: for a machine more than 10x oversubscribed, and the base for starting a
#: worker (~1.3 s measured on a loaded machine) 20 times over. A worker that
#: misses it is killed: the verification then fails with WorkerFailed and
#: `ledger.bundle.verify_bundle` verifies the bundle again in its own process.
#: ORETRACE_BUNDLE_WORKER_TIMEOUT (seconds) replaces the computed limit.
WORKER_WAIT_BASE_S = 30.0
WORKER_WAIT_PER_UNIT_S = 0.002


class WorkerSettingError(ValueError):
    """ORETRACE_BUNDLE_WORKERS or ORETRACE_BUNDLE_WORKER_TIMEOUT is malformed (the message names it)."""


#: The largest ORETRACE_BUNDLE_WORKER_TIMEOUT accepted (one day): `poll` takes no
#: infinite or astronomically large wait (OverflowError), and a worker silent for a
#: day is hung.
WORKER_WAIT_MAX_S = 86400.0


#: The most of a malformed setting's value an error message quotes.
_QUOTED_CHARS = 40


def _quoted(text: str) -> str:
    """`text` quoted for an error message: whole if short, else its start and its length
    (a value of thousands of characters is not echoed back)."""
    if len(text) <= _QUOTED_CHARS:
        return repr(text)
    return f"{text[:_QUOTED_CHARS]!r}... ({len(text)} characters)"


def _setting_text(name: str) -> str:
    """The environment variable `name` without ASCII white space around it ("" if unset):
    str.strip() would also take away non-ASCII spaces (U+00A0, U+3000) and U+001C-U+001F,
    so that "5\u00a0" would read as a plain 5."""
    return os.environ.get(name, "").strip(" \t\n\r\f\v")


def _time_limit_setting() -> float | None:
    text = _setting_text("ORETRACE_BUNDLE_WORKER_TIMEOUT")
    if not text:
        return None
    # plain ASCII decimals only: float() would also take "1_0", "1e3", "inf" and non-ASCII digits
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text):  # [0-9]: ASCII digits only
        raise WorkerSettingError(f"ORETRACE_BUNDLE_WORKER_TIMEOUT: {_quoted(text)} is not a number of seconds")
    value = float(text)
    if not 0 < value <= WORKER_WAIT_MAX_S:
        raise WorkerSettingError(
            f"ORETRACE_BUNDLE_WORKER_TIMEOUT: {_quoted(text)} must be more than 0 and at most {WORKER_WAIT_MAX_S:g} seconds"
        )
    return value


def check_settings() -> None:
    """WorkerSettingError naming the setting if ORETRACE_BUNDLE_WORKERS (a non-negative
    integer) or ORETRACE_BUNDLE_WORKER_TIMEOUT (seconds, 0 < t <= WORKER_WAIT_MAX_S)
    is malformed. `oretrace verify` calls it first, so that a bad setting is refused
    as such (exit 2) rather than reported as a bundle that failed verification."""
    default_workers()
    _time_limit_setting()


def _work_units(msg) -> int:
    """The work a message gives a worker, in `WORKER_WAIT_PER_UNIT_S` units: one per
    point to decode or multiply and per coefficient job, one for any other message."""
    return len(msg[1]) if msg and msg[0] in ("load", "vectors", "msm") else 1


class _Worker(Child):
    """One worker process, `python -m crypto.batch BACKEND`, a `supervision.children.Child`
    (started by exec, never forked, the parent's __main__ not re-run; the parent's
    environment; frames of `multiprocessing.connection`). Every send and every reply
    has a time limit (`time_limit`): a worker that misses it is killed and WorkerFailed
    raised, never a parent blocked on a pipe forever."""

    def __init__(self, backend_name: str):
        root = Path(__file__).resolve().parent.parent
        super().__init__("crypto.batch", [backend_name], env=environment(root, inherit=True), name="verification worker")
        #: units of work sent since the last reply (`_work_units`)
        self.pending = 0

    def time_limit(self) -> float:
        """Seconds one wait on this worker may take now (see WORKER_WAIT_BASE_S)."""
        setting = _time_limit_setting()
        return setting if setting is not None else WORKER_WAIT_BASE_S + WORKER_WAIT_PER_UNIT_S * self.pending

    def send(self, msg) -> None:
        """Send `msg`; WorkerFailed if the worker is gone or does not read it within `time_limit()`."""
        self.pending += _work_units(msg)
        self._exchange(super().send, msg)

    def recv(self):
        """The worker's next reply; WorkerFailed if it dies or gives none within `time_limit()`."""
        msg = self._exchange(super().recv)
        self.pending = 0
        return msg

    def _exchange(self, step, *args):
        try:
            return step(*args, timeout=self.time_limit())
        except ChildFailed as exc:
            hint = " (ORETRACE_BUNDLE_WORKER_TIMEOUT sets the limit)" if exc.reason == "hung" else ""
            raise WorkerFailed(f"{exc}{hint}") from None


class WorkerPool:
    """`size` worker processes for one curve backend. One verification uses it
    at a time: take it with `acquire()` (non-blocking; False if another
    verification holds it)."""

    def __init__(self, size: int, backend_name: str | None = None):
        if size < 1:
            raise ValueError("a worker pool has at least one process")
        self.backend_name = backend_name or backend().name
        self.workers: list[_Worker] = []
        try:
            while len(self.workers) < size:
                self.workers.append(_Worker(self.backend_name))
        except BaseException as exc:  # none of them left running, their pipes open
            for w in self.workers:
                w.kill()
            if isinstance(exc, OSError):  # out of processes, memory or descriptors: verify in-process
                raise WorkerFailed(f"could not start {size} verification workers: {exc}") from None
            raise
        self.broken = False
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()

    def reset(self) -> None:
        for w in self.workers:
            w.send(("reset",))

    def discard(self) -> None:
        """A worker failed: kill them all now (the others' pipes may be out of step
        with this process); `shared_pool` starts a new pool on its next use."""
        self.broken = True
        for w in self.workers:
            w.kill()

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers = []


#: The most bundle workers ORETRACE_BUNDLE_WORKERS may ask for, unless the machine has
#: more cores: the work is CPU-bound, so workers beyond the cores only add start-up
#: time and memory (each is a Python process with a curve backend loaded), and a
#: typo such as 100000 would otherwise try to start that many processes.
MAX_BUNDLE_WORKERS = 64

_shared: dict[tuple[str, int], WorkerPool] = {}
_shared_lock = threading.Lock()


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def most_workers() -> int:
    """The most worker processes a setting may ask for: `MAX_BUNDLE_WORKERS`, or the
    number of cores if that is larger (ORETRACE_BUNDLE_WORKERS here, the server's
    ORETRACE_VERIFY_WORKERS in `api.settings`)."""
    return max(MAX_BUNDLE_WORKERS, cores())


def default_workers() -> int:
    """Worker processes for batch (bundle) verification: ORETRACE_BUNDLE_WORKERS (an
    integer from 0 to `most_workers()`; 0 = none, everything in this process;
    WorkerSettingError if it is anything else), else one per core, none on one core.
    (ORETRACE_VERIFY_WORKERS is the server's count of concurrent verifications.)"""
    available = cores()
    text = _setting_text("ORETRACE_BUNDLE_WORKERS")
    if text:
        most = most_workers()
        digits = text.lstrip("0") or "0"  # leading zeros do not count against the length bound
        if not (text.isascii() and text.isdigit()) or len(digits) > len(str(most)) or int(digits) > most:
            raise WorkerSettingError(
                f"ORETRACE_BUNDLE_WORKERS: {_quoted(text)} is not a number of worker processes from 0 to {most}"
            )
        return int(digits)
    return available if available > 1 else 0


def shared_pool(size: int) -> WorkerPool | None:
    """The process-wide pool of `size` workers for the active backend (started on first use), or None for 0."""
    if size <= 0:
        return None
    key = (backend().name, size)
    with _shared_lock:
        pool = _shared.get(key)
        if pool is not None and (pool.broken or not all(w.alive() for w in pool.workers)):
            if pool.acquire():  # nobody is using it: replace it
                pool.close()
                pool = None
        if pool is None:
            pool = _shared[key] = WorkerPool(size)
        return pool


@atexit.register
def _close_shared() -> None:
    for pool in _shared.values():
        pool.close()
    _shared.clear()


if __name__ == "__main__":  # a worker process (see _Worker)
    _worker_main(sys.argv[1])
