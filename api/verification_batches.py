"""Cross-publication batch verification: the publications waiting for a verifier
at the same time are checked together, their proofs in ONE multi-scalar
multiplication, and each still gets its own verdict.

Why: a transformation's verification is ~80% one MSM of ~1,076 points, of which
1,026 are the shared bases (the Bulletproof vectors G_i, H_i of its range and
loss-cap proofs, G, H) and only ~50 its own points. Folding k publications
sums the coefficients of the shared bases, so k of them cost one MSM of
~1,026 + 50k points instead of k MSMs of ~1,076 (docs/performance.md,
"Cross-publication batch verification").

`verify_publications(items)` (pure, CPU heavy, run in a verifier thread or
process) takes `(envelope, view, policy)` triples and returns one verdict per
item, in order:

1. `ledger.rules.apply` runs for each envelope with its own
   `ledger.proofs.BatchCollector`. A rejection of the rules (before any MSM:
   signature, references, mass balance, a proof of the wrong shape) is that
   envelope's verdict and involves no other item; so is an unexpected
   exception of the rules on that envelope.
2. The relations of every remaining envelope are checked in one call of
   `crypto.batch.verify_relations` (fresh random weights drawn after every
   proof of the batch is fixed). If it holds, every one is accepted.
3. If not, `verify_relations` has bisected to the FIRST false relation in
   list order and checked it alone: the envelope holding it is refused with
   BAD_PROOF naming that proof (its own first false proof: the same message as
   verifying it alone). Every relation before it was in a weighted sum of the
   bisection that held, so the envelopes before the refused one are accepted;
   those after it are checked again as a batch, with fresh weights. (With
   deferred point decoding, `ledger.proofs.batch_scope`, a relation can be
   named for a point that does not decode, without a bisection: then nothing
   before it was checked and every other envelope is checked again.) Each
   failing round removes one bad envelope, so a batch of n envelopes with b
   bad ones takes at most b + 1 rounds (`Verdicts.rounds`).

Worst-case cost for honest publications: a bad one in their batch costs one
failing MSM, its bisection (ceil(log2 R) MSMs for R relations left in the
batch, ~3 per transformation) and the confirmation of the named relation
alone. The bisection's MSMs do NOT halve in size: nearly every subset holds a
range proof and so the ~1,026 shared bases (tests/test_verification_batches.py
counts them: 1,050-1,326 points for 6 transformations). In all at most
b * (2 + ceil(log2 R)) + 1 MSMs for b bad envelopes, b < n <= the batch size
setting (`ORETRACE_VERIFY_MAX_BATCH`): 7 bad and 1 honest at the default 8
(R = 24) cost the honest one up to 50 MSMs of ~1,000-1,450 points instead of
one. Never more than the batch: an attacker's envelopes in other batches cost
this one nothing.

Soundness (docs/performance.md argues it in full): the weights come from a
transcript over every relation's binding (which covers its statement, context
and proof bytes) plus 32 bytes of OS randomness, drawn after every proof of
the batch is fixed; a false relation makes the weighted sum the identity with
probability <= 1/r (r ~ 2^255) per false equation, whoever signed it. One
signer's valid proofs cannot cover for another's false one: each relation has
its own independent weights, so the sum is the identity only if every
relation is (up to that probability), and nothing in an accepted relation
depends on another envelope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crypto.batch import BatchFailure, verify_relations
from ledger.errors import Code, Rejection
from ledger.proofs import BatchCollector

#: A verdict that travels between processes: ("ok", Effects), ("rejected", (code value, message))
#: (a Rejection does not survive pickling: its __init__ takes two arguments) or ("error",
#: the unexpected exception the rules raised on this envelope, re-raised in its request only).
Verdict = tuple[str, Any]


@dataclass(frozen=True)
class Verdicts:
    """One verdict per item, in order, and how many batch MSM rounds it took."""

    verdicts: list[Verdict]
    rounds: int


def accepted(effects) -> Verdict:
    return ("ok", effects)


def refused(rejection: Rejection) -> Verdict:
    return ("rejected", (rejection.code.value, rejection.message))


def outcome(verdict: Verdict):
    """The Effects of an accepted verdict; raises the Rejection of a refused one
    (or the unexpected exception of an "error" one)."""
    status, value = verdict
    if status == "rejected":
        raise Rejection(Code(value[0]), value[1])
    if status == "error":
        raise value
    return value


def verify_publications(items: Sequence[tuple[Any, Any, Any]]) -> Verdicts:
    """Verify `(envelope, view, policy)` triples together (module docstring).

    Pure: nothing is written. Each verdict is what `api.service.verify_publication`
    of that item alone gives (its Effects, the rules' own Rejection, or
    BAD_PROOF naming its first proof that does not verify).
    """
    from ledger import rules

    verdicts: list[Verdict | None] = [None] * len(items)
    pending: list[tuple[int, BatchCollector, Any]] = []  # (item index, its proofs, its effects)
    for i, (envelope, view, policy) in enumerate(items):
        proofs = BatchCollector()
        try:
            effects = rules.apply(envelope, view, policy, proofs)
        except Rejection as rejection:
            verdicts[i] = refused(rejection)
            continue
        except Exception as exc:  # a fault of the rules on this input: its request's error, not its batch's
            verdicts[i] = ("error", exc)
            continue
        pending.append((i, proofs, effects))
    rounds = 0
    while pending:
        rounds += 1
        relations = [named.relation for _, proofs, _ in pending for named in proofs.relations]
        bisected = not _holds_deferred_points(relations)  # read before the MSM decodes them
        try:
            verify_relations(relations)
        except BatchFailure as failure:
            k, index = _holder(pending, failure.index)
            i, proofs, _ = pending[k]
            verdicts[i] = refused(proofs.rejection(index, failure.reason))
            if bisected:  # every relation before failure.index was in a sum that held: verified
                for j, _, effects in pending[:k]:
                    verdicts[j] = accepted(effects)
                pending = pending[k + 1 :]
            else:  # named by a point that does not decode, with nothing checked: all again
                del pending[k]
            continue
        for i, _, effects in pending:
            verdicts[i] = accepted(effects)
        pending = []
    return Verdicts(verdicts, rounds)  # type: ignore[arg-type]  # every item has its verdict now


def _holds_deferred_points(relations: list) -> bool:
    """Does any relation carry a proof point whose decoding was deferred
    (`crypto.group.deferred_decoding`, inside `ledger.proofs.batch_scope`)?

    Only then can `verify_relations` name a relation without a bisection (the
    first holding a point that does not decode), having checked nothing before
    it. Otherwise it names the first false relation found by bisection, every
    relation before it having been in a weighted sum that held."""
    return any(p.is_deferred() for relation in relations for p in relation.proof_points)


def _holder(pending: list[tuple[int, BatchCollector, Any]], index: int) -> tuple[int, int]:
    """(position in `pending`, index within its collector) of the batch's relation `index`."""
    for k, (_, proofs, _) in enumerate(pending):
        if index < len(proofs.relations):
            return k, index
        index -= len(proofs.relations)
    raise IndexError(index)
