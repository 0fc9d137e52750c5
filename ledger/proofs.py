"""Where the rules send proofs, and how outside bytes become points and proofs.

The rules never verify a proof themselves: they hand every range proof
(`check_range`, a `RangeStatement`) and every balance proof (`check_zero`) to
a sink, with the name and meaning a rejection should report.

* `BatchCollector` turns each proof into its verification relation (replaying
  its transcript at once, so a proof of the wrong shape is rejected at its
  event) and `verify()` checks all of them - range and balance proofs alike -
  in ONE multi-scalar multiplication with random weights (`crypto.batch`).
  A failing batch is bisected, never re-verified proof by proof, and the
  rejection names the first failing proof (with its event, for a bundle).
  The server uses it for the proofs of one envelope
  (`api.service.verify_publication`), offline bundle verification and the
  log monitor for every proof of a bundle or ledger.
* `VerifyNow` verifies each proof alone, as soon as the rules produce it: one
  MSM per proof. It is the reference the folded verification is tested
  against (tests/test_fold_equivalence.py) and what the test ledger uses.

`batch_scope()` is the scope of one such verification: every point is
decoded once (`crypto.group.decode_cache`), the points inside proofs are
decoded in worker processes while the rules replay the events
(`crypto.group.deferred_decoding`, `crypto.batch.DeferredPoints`), and those
workers also multiply their share of the points. Inside it, a proof point
that does not decode fails at `verify()` as BAD_PROOF ("malformed point")
naming its proof; elsewhere it fails at once as MALFORMED.

Every failure becomes a `Rejection`: BAD_PROOF for a proof that does not
verify, MALFORMED for bytes that are not a valid point or proof.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from crypto.batch import BatchFailure, DeferredPoints, default_workers, shared_pool, verify_relations
from crypto.bulletproofs import RangeProof, RangeStatement, range_relation, verify_range
from crypto.errors import DecodeError, ProofError
from crypto.group import Point, decode_cache, deferred_decoding
from crypto.sigma import ZeroProof, verify_zero, zero_relation
from crypto.transcript import Transcript

from .errors import Code, Rejection

# --------------------------------------------------------------------------- decoding


def decode_point(field_name: str, text: str, *, allow_identity: bool = False) -> Point:
    """A statement point (commitment), fully checked now. Rejection(MALFORMED) if invalid."""
    try:
        with deferred_decoding(False):  # the rules compute with it: decode it now
            return Point.from_hex(text, allow_identity=allow_identity)
    except DecodeError as exc:
        raise Rejection(Code.MALFORMED, f"{field_name}: {exc.reason}") from None


def decode_range_proof(field_name: str, text: str) -> RangeProof:
    try:
        return RangeProof.from_bytes(bytes.fromhex(text))
    except (DecodeError, ValueError) as exc:
        raise Rejection(Code.MALFORMED, f"{field_name}: {_reason(exc)}") from None


def decode_zero_proof(field_name: str, text: str) -> ZeroProof:
    try:
        return ZeroProof.from_bytes(bytes.fromhex(text))
    except (DecodeError, ValueError) as exc:
        raise Rejection(Code.MALFORMED, f"{field_name}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc)


def _bad_proof(name: str, meaning: str, reason: str) -> Rejection:
    return Rejection(Code.BAD_PROOF, f"{name}: {meaning} ({reason})" if meaning else f"{name}: {reason}")


# --------------------------------------------------------------------------- batch scope

_SCOPE: contextvars.ContextVar[DeferredPoints | None] = contextvars.ContextVar("oretrace_batch_scope", default=None)

#: Worker processes start only once a verification has this many distinct proof
#: points (~200 transformations): below it, decoding them here (~0.1 ms each)
#: costs less than starting the workers (1.3 s measured on a loaded machine,
#: the first time in a process).
WORKERS_MIN_POINTS = 4096


@contextlib.contextmanager
def batch_scope(workers: int | None = None) -> Iterator[None]:
    """The scope of one batch verification (see the module docstring).

    `workers`: worker processes for decoding and multiplying proof points
    (default `crypto.batch.default_workers()`: one per core, none on one
    core; 0 = all in this process), used once the verification reaches
    `WORKERS_MIN_POINTS` distinct proof points. The process-wide pool is used
    by one scope at a time; a concurrent scope runs in its own process instead.
    """
    count = default_workers() if workers is None else workers
    held: list = []

    def take_pool():
        pool = shared_pool(count)
        if pool is not None and pool.acquire():
            held.append(pool)
            return pool
        return None

    try:
        token = _SCOPE.set(DeferredPoints(take_pool if count else None, start_after=WORKERS_MIN_POINTS))
        try:
            with decode_cache(), deferred_decoding():
                yield
        finally:
            _SCOPE.reset(token)
    finally:
        for pool in held:
            pool.release()


# --------------------------------------------------------------------------- sinks


@dataclass(frozen=True)
class NamedRelation:
    """A proof's verification relation with the name and meaning a rejection should report."""

    name: str
    relation: Any  # crypto.batch.Relation
    meaning: str = ""


@dataclass
class ProofSink:
    """Where the rules send proofs. Counts them; subclasses verify them."""

    range_proofs: int = 0
    sigma_proofs: int = 0

    def check_zero(
        self, name: str, transcript: Transcript, points: Sequence[Point], proof: ZeroProof, meaning: str = ""
    ) -> None:
        """A balance proof: every point commits to 0 (`crypto.sigma.ZeroProof`)."""
        raise NotImplementedError

    def check_range(self, name: str, statement: RangeStatement, meaning: str = "") -> None:
        """A range proof (`crypto.bulletproofs`) with its transcript already bound by the caller."""
        raise NotImplementedError


@dataclass
class VerifyNow(ProofSink):
    """Verify every proof as soon as the rules produce it."""

    def check_zero(
        self, name: str, transcript: Transcript, points: Sequence[Point], proof: ZeroProof, meaning: str = ""
    ) -> None:
        self.sigma_proofs += 1
        try:
            verify_zero(transcript, list(points), proof)
        except ProofError as exc:
            raise _bad_proof(name, meaning, exc.reason) from None

    def check_range(self, name: str, statement: RangeStatement, meaning: str = "") -> None:
        self.range_proofs += 1
        s = statement
        try:
            verify_range(s.transcript.clone(), list(s.commitments), s.proof, s.n)
        except ProofError as exc:
            raise _bad_proof(name, meaning, exc.reason) from None


@dataclass
class BatchCollector(ProofSink):
    """Collect every proof as a relation; `verify()` checks them all in one MSM.

    `scope` prefixes the names of proofs collected from now on (e.g. the
    bundle event being replayed), so a failure names its event too. Inside
    `batch_scope()` the proofs' points stream to its worker processes.
    """

    scope: str = ""
    relations: list[NamedRelation] = field(default_factory=list)
    deferred: DeferredPoints = field(default_factory=lambda: _SCOPE.get() or DeferredPoints())

    def _collect(self, name: str, meaning: str, make) -> None:
        try:
            relation = make()
        except ProofError as exc:
            raise _bad_proof(f"{self.scope}{name}", meaning, exc.reason) from None
        self.deferred.add(relation.proof_points)
        self.relations.append(NamedRelation(f"{self.scope}{name}", relation, meaning))

    def check_zero(
        self, name: str, transcript: Transcript, points: Sequence[Point], proof: ZeroProof, meaning: str = ""
    ) -> None:
        self.sigma_proofs += 1
        self._collect(name, meaning, lambda: zero_relation(transcript, points, proof))

    def check_range(self, name: str, statement: RangeStatement, meaning: str = "") -> None:
        self.range_proofs += 1
        self._collect(name, meaning, lambda: range_relation(statement))

    def verify(self) -> None:
        """Every collected proof verifies, or Rejection(BAD_PROOF) naming the first that does not."""
        try:
            verify_relations([r.relation for r in self.relations], self.deferred)
        except BatchFailure as failure:
            raise self.rejection(failure.index, failure.reason) from None

    def rejection(self, index: int, reason: str) -> Rejection:
        """Rejection(BAD_PROOF) naming collected proof `index` (e.g. "loss-cap proof: ...")."""
        named = self.relations[index]
        return _bad_proof(named.name, named.meaning, reason)
