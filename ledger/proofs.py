"""Where the rules send proofs, and how outside bytes become points and proofs.

Range proofs dominate verification cost, and many of them verify much faster
together (one multi-scalar multiplication with random weights) than one by
one. So the rules never verify a range proof themselves: they hand a named
`RangeStatement` to a sink.

* `VerifyNow` verifies at once (the server, one envelope at a time).
* `BatchCollector` collects them; `verify()` checks all of them in one batch
  and, only when the batch fails, re-checks them one by one to name the
  culprit (offline bundle verification).

Sigma (balance) proofs are cheap and are verified immediately in both modes.
Every failure becomes a `Rejection`: BAD_PROOF for a proof that does not
verify, MALFORMED for bytes that are not a valid point or proof.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from crypto.bulletproofs import RangeProof, RangeStatement, batch_verify_range, verify_range
from crypto.errors import DecodeError, ProofError
from crypto.group import Point
from crypto.sigma import ZeroProof, verify_zero
from crypto.transcript import Transcript

from .errors import Code, Rejection

# --------------------------------------------------------------------------- decoding


def decode_point(field_name: str, text: str, *, allow_identity: bool = False) -> Point:
    try:
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


def _bad_proof(name: str, meaning: str, exc: ProofError) -> Rejection:
    return Rejection(Code.BAD_PROOF, f"{name}: {meaning} ({exc.reason})" if meaning else f"{name}: {exc.reason}")


# --------------------------------------------------------------------------- sinks


@dataclass(frozen=True)
class NamedStatement:
    """A range statement with the name and meaning a rejection should report."""

    name: str
    statement: RangeStatement
    meaning: str = ""


@dataclass
class ProofSink:
    """Base sink: counts proofs; verifies sigma proofs at once. Subclasses handle range proofs."""

    range_proofs: int = 0
    sigma_proofs: int = 0

    def check_zero(
        self, name: str, transcript: Transcript, points: Sequence[Point], proof: ZeroProof, meaning: str = ""
    ) -> None:
        self.sigma_proofs += 1
        try:
            verify_zero(transcript, list(points), proof)
        except ProofError as exc:
            raise _bad_proof(name, meaning, exc) from None

    def check_range(self, name: str, statement: RangeStatement, meaning: str = "") -> None:
        raise NotImplementedError


@dataclass
class VerifyNow(ProofSink):
    """Verify every range proof as soon as the rules produce it."""

    def check_range(self, name: str, statement: RangeStatement, meaning: str = "") -> None:
        self.range_proofs += 1
        _verify_one(NamedStatement(name, statement, meaning))


@dataclass
class BatchCollector(ProofSink):
    """Collect range statements; `verify()` checks them all in one batch.

    `scope` prefixes the names of statements collected from now on (e.g. the
    bundle event being replayed), so a failure names its event too.
    """

    scope: str = ""
    statements: list[NamedStatement] = field(default_factory=list)

    def check_range(self, name: str, statement: RangeStatement, meaning: str = "") -> None:
        self.range_proofs += 1
        self.statements.append(NamedStatement(f"{self.scope}{name}", statement, meaning))

    def verify(self) -> None:
        """All collected range proofs verify, or Rejection(BAD_PROOF) naming the first that does not."""
        try:
            batch_verify_range([s.statement for s in self.statements])  # leaves the transcripts untouched
        except ProofError:
            for named in self.statements:
                _verify_one(named)
            raise Rejection(Code.BAD_PROOF, "range proofs: the batch failed but every proof verifies alone") from None


def _verify_one(named: NamedStatement) -> None:
    s = named.statement
    try:
        verify_range(s.transcript.clone(), list(s.commitments), s.proof, s.n)
    except ProofError as exc:
        raise _bad_proof(named.name, named.meaning, exc) from None
