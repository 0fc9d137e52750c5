"""Claim proofs: linear statements about committed values, reduced to range proofs.

Every claim here is "some public linear combination of commitments commits to a
value in [0, 2^64)", proven with a 64-bit Bulletproof (`crypto.bulletproofs`):

* in range    low <= v <= high          on  [C - low*G, high*G - C]        (m = 2)
* share       q*v_index <= p*sum(v)     on  p*sum(C) - q*C_index, sum(C) - G          (m = 2)
              q*v_index >= p*sum(v)     on  q*C_index - p*sum(C), sum(C) - G          (m = 2)
* share in    p*sum(v) <= q*v_index     on  q*C_index - p*sum(C),
  range         <= p_max*sum(v)             p_max*sum(C) - q*C_index, sum(C) - G     (m = 3)
* nonnegative v >= 0 (and < 2^64)       on  C                               (m = 1)

Before the range proof, each claim absorbs into the caller's transcript its
own domain separator, its parameters (low, high / p, q, index, direction) and
its input commitments, so a proof for one parameter set can never be replayed
for another (a share proof for p = 16 does not verify for p = 17), even when
the caller's context forgot to bind them. The range proof then absorbs its own
statement points, n, m and generators.

Verification consumes (mutates) the transcript, exactly like proving; pass a
fresh transcript, or `transcript.clone()`.

The `*_batch_statement` functions do the claim-specific absorption and return
the `RangeStatement` that `verify_range` / `batch_verify_range` checks, so
many claim proofs can be verified in one multi-scalar multiplication.
"""

from __future__ import annotations

from collections.abc import Sequence

from .bulletproofs import RangeProof, RangeStatement, prove_range, verify_range
from .errors import ProofError, ProvingError
from .generators import G
from .group import Point
from .pedersen import Opening, add, commit_opening
from .transcript import Transcript

#: Claim range proofs are all 64-bit.
BITS = 64
VALUE_BOUND = 1 << BITS
#: Share ratios p/q use p, q < 2^16 (so p*sum(v) and q*v_index cannot wrap mod r).
RATIO_BOUND = 1 << 16
#: At most this many values in a share claim (keeps p*sum(v) < r by a huge margin).
MAX_SHARE_VALUES = 1 << 16

IN_RANGE_DOMAIN = b"claim/in-range"
SHARE_DOMAIN = b"claim/share"
SHARE_IN_RANGE_DOMAIN = b"claim/share-in-range"
NONNEGATIVE_DOMAIN = b"claim/nonnegative"


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# --------------------------------------------------------------------------- statements


def range_statement(commitment: Point, low: int, high: int) -> list[Point]:
    """The two points whose values are in [0, 2^64) iff low <= v <= high: [C - low*G, high*G - C]."""
    g = G()
    return [commitment - g * low, g * high - commitment]


def share_statement(commitments: Sequence[Point], index: int, p: int, q: int, at_least: bool) -> Point:
    """The point whose value is non-negative iff the share claim holds.

    at most:  p*sum(C) - q*C_index   commits to p*sum(v) - q*v_index  (>= 0 iff v_index/sum(v) <= p/q)
    at least: q*C_index - p*sum(C)   commits to q*v_index - p*sum(v)  (>= 0 iff v_index/sum(v) >= p/q)
    """
    point = add(commitments) * p - commitments[index] * q
    return -point if at_least else point


def nonempty_statement(commitments: Sequence[Point]) -> Point:
    """sum(C) - G: its value is non-negative iff sum(v) >= 1.

    Without it a share claim on an empty lot holds vacuously (0 <= p*0 and
    0 >= p*0 alike), so "recycled >= 16 %" could be shown for zero grams.
    """
    return add(commitments) - G()


def share_statements(commitments: Sequence[Point], index: int, p: int, q: int, at_least: bool) -> list[Point]:
    """The two points a share proof shows non-negative: the share inequality and a non-empty total."""
    return [share_statement(commitments, index, p, q, at_least), nonempty_statement(commitments)]


def _in_range_error(low: object, high: object) -> str | None:
    if not _is_int(low) or not _is_int(high):
        return "low and high must be integers"
    if not 0 <= low <= high < VALUE_BOUND:
        return "need 0 <= low <= high < 2^64"
    return None


def _share_error(count: int, index: object, p: object, q: object, at_least: object) -> str | None:
    if not isinstance(at_least, bool):
        return "the direction (at_least) must be a bool"
    if not all(_is_int(x) for x in (index, p, q)):
        return "index, p and q must be integers"
    if not 1 <= count <= MAX_SHARE_VALUES:
        return f"a share claim covers between 1 and {MAX_SHARE_VALUES} values"
    if not 0 <= index < count:
        return f"index {index} out of range for {count} values"
    if not 0 < q < RATIO_BOUND:
        return "need 0 < q < 2^16"
    if not 0 <= p <= q:
        return "need 0 <= p <= q"
    return None


# --------------------------------------------------------------------------- transcript binding


def _bind_in_range(transcript: Transcript, commitment: Point, low: int, high: int) -> None:
    transcript.domain_separator(IN_RANGE_DOMAIN)
    transcript.append_u64(b"low", low)
    transcript.append_u64(b"high", high)
    transcript.append_points(b"C", [commitment])


def _bind_share(transcript: Transcript, commitments: Sequence[Point], index: int, p: int, q: int, at_least: bool) -> None:
    transcript.domain_separator(SHARE_DOMAIN)
    transcript.append_message(b"direction", b"at-least" if at_least else b"at-most")
    transcript.append_u64(b"p", p)
    transcript.append_u64(b"q", q)
    transcript.append_u64(b"index", index)
    transcript.append_points(b"C", commitments)


def _bind_nonnegative(transcript: Transcript, commitment: Point) -> None:
    transcript.domain_separator(NONNEGATIVE_DOMAIN)
    transcript.append_points(b"C", [commitment])


def _prove(transcript: Transcript, statement: list[Point], openings: list[Opening]) -> RangeProof:
    proof, points = prove_range(transcript, openings, BITS)
    if list(points) != statement:  # cannot happen when the openings were checked
        raise ProvingError("internal: the range proof commitments differ from the claim statement")
    return proof


def _share_total(claim: str, error: str | None, commitments: list[Point], openings: list[Opening]) -> Opening:
    """The prover's checks common to the share claims: the public parameters (`error`, from
    `_share_error` or `_share_in_range_error`), one opening per commitment, each value in
    [0, 2^64) and opening its commitment, and a non-zero sum. Returns the sum of the openings
    (the claim's denominator). ProvingError("<claim>: ...") for the first check that fails."""
    if error:
        raise ProvingError(f"{claim}: {error}")
    if len(openings) != len(commitments):
        raise ProvingError(f"{claim}: {len(commitments)} commitments but {len(openings)} openings")
    for i, (c, o) in enumerate(zip(commitments, openings)):
        if not 0 <= o.value < VALUE_BOUND:
            raise ProvingError(f"{claim}: value {i} is outside [0, 2^64)")
        _check_opens(c, o, f"commitment {i}")
    total = sum(openings, Opening.zero())
    if total.value < 1:
        raise ProvingError(f"{claim}: the values sum to zero, so no share can be shown")
    return total


def _check_opens(commitment: Point, opening: Opening, what: str) -> None:
    if not isinstance(commitment, Point):
        raise ProvingError(f"{what} must be a Point")
    if commit_opening(opening) != commitment:
        raise ProvingError(f"the opening does not open {what}")


# --------------------------------------------------------------------------- in range


def prove_in_range(transcript: Transcript, commitment: Point, opening: Opening, low: int, high: int) -> RangeProof:
    """Prove low <= v <= high for C = v*G + r*H (0 <= low <= high < 2^64).

    One aggregated 64-bit proof (m = 2) on [C - low*G, high*G - C]. Sound with
    no precondition on v: both values in [0, 2^64) and their sum high - low < 2^64
    force v in [low, high] as integers. ProvingError if the claim is false.
    """
    error = _in_range_error(low, high)
    if error:
        raise ProvingError(f"in-range claim: {error}")
    _check_opens(commitment, opening, "the commitment")
    if not low <= opening.value <= high:
        raise ProvingError("in-range claim: the value is not in [low, high]")
    _bind_in_range(transcript, commitment, low, high)
    openings = [opening - Opening(low, 0), Opening(high, 0) - opening]
    return _prove(transcript, range_statement(commitment, low, high), openings)


def in_range_batch_statement(
    transcript: Transcript, commitment: Point, low: int, high: int, proof: RangeProof
) -> RangeStatement:
    """Bind the in-range claim into `transcript`; return the range statement to verify (or batch)."""
    error = _in_range_error(low, high)
    if error:
        raise ProofError("in-range", error)
    if not isinstance(commitment, Point):
        raise ProofError("in-range", "the commitment must be a Point")
    _bind_in_range(transcript, commitment, low, high)
    return RangeStatement(transcript, tuple(range_statement(commitment, low, high)), proof, BITS)


def verify_in_range(transcript: Transcript, commitment: Point, low: int, high: int, proof: RangeProof) -> None:
    """Check a proof that low <= v <= high. Raises ProofError."""
    _verify(in_range_batch_statement(transcript, commitment, low, high, proof))


# --------------------------------------------------------------------------- share


def prove_share(
    transcript: Transcript,
    commitments: Sequence[Point],
    openings: Sequence[Opening],
    index: int,
    p: int,
    q: int,
    at_least: bool,
) -> RangeProof:
    """Prove v_index/sum(v) <= p/q (or >= with at_least), i.e. q*v_index <= p*sum(v).

    One aggregated 64-bit proof (m = 2) on `share_statements(...)`: the share
    inequality and sum(v) >= 1 (a share of nothing proves nothing).

    Soundness precondition: every v_i is already known to be in [0, 2^64)
    (proven elsewhere, e.g. by the range proofs that created the commitments).
    With p, q < 2^16 the integer p*sum(v) - q*v_index then lies strictly
    between -r + 2^64 and r, so it cannot wrap mod the group order r and a
    value in [0, 2^64) mod r means a non-negative integer.

    Completeness: the proven value |p*sum(v) - q*v_index| must be below 2^64
    (always true when p*sum(v) < 2^64 and q*v_index < 2^64); ProvingError
    otherwise, and when the claim is false or the openings do not open the
    commitments or a value is outside [0, 2^64).
    """
    commitments, openings = list(commitments), list(openings)
    total = _share_total("share claim", _share_error(len(commitments), index, p, q, at_least), commitments, openings)
    diff = total.scale(p) - openings[index].scale(q)
    if at_least:
        diff = Opening.zero() - diff
    if diff.value < 0:
        raise ProvingError("share claim: the claim is false")
    if diff.value >= VALUE_BOUND:
        raise ProvingError("share claim: true, but the difference is too large for a 64-bit proof")
    _bind_share(transcript, commitments, index, p, q, at_least)
    return _prove(transcript, share_statements(commitments, index, p, q, at_least), [diff, total - Opening(1, 0)])


def share_batch_statement(
    transcript: Transcript,
    commitments: Sequence[Point],
    index: int,
    p: int,
    q: int,
    at_least: bool,
    proof: RangeProof,
) -> RangeStatement:
    """Bind the share claim into `transcript`; return the range statement to verify (or batch)."""
    commitments = list(commitments)
    _refuse_statement("share", _share_error(len(commitments), index, p, q, at_least), commitments)
    _bind_share(transcript, commitments, index, p, q, at_least)
    return RangeStatement(transcript, tuple(share_statements(commitments, index, p, q, at_least)), proof, BITS)


def verify_share(
    transcript: Transcript,
    commitments: Sequence[Point],
    index: int,
    p: int,
    q: int,
    at_least: bool,
    proof: RangeProof,
) -> None:
    """Check a share proof (see `prove_share` for the soundness precondition). Raises ProofError."""
    _verify(share_batch_statement(transcript, commitments, index, p, q, at_least, proof))


# --------------------------------------------------------------------------- share in range


def share_in_range_statements(commitments: Sequence[Point], index: int, p: int, p_max: int, q: int) -> list[Point]:
    """The three points a share-in-range proof shows non-negative: share >= p/q, share <= p_max/q, sum(v) >= 1."""
    return [
        share_statement(commitments, index, p, q, True),
        share_statement(commitments, index, p_max, q, False),
        nonempty_statement(commitments),
    ]


def _share_in_range_error(count: int, index: object, p: object, p_max: object, q: object) -> str | None:
    error = _share_error(count, index, p, q, True) or _share_error(count, index, p_max, q, False)
    if error is None and not p <= p_max:
        error = "need p <= p_max"
    return error


def _bind_share_in_range(transcript: Transcript, commitments: Sequence[Point], index: int, p: int, p_max: int, q: int) -> None:
    transcript.domain_separator(SHARE_IN_RANGE_DOMAIN)
    transcript.append_u64(b"p", p)
    transcript.append_u64(b"p_max", p_max)
    transcript.append_u64(b"q", q)
    transcript.append_u64(b"index", index)
    transcript.append_points(b"C", commitments)


def prove_share_in_range(
    transcript: Transcript,
    commitments: Sequence[Point],
    openings: Sequence[Opening],
    index: int,
    p: int,
    p_max: int,
    q: int,
) -> RangeProof:
    """Prove p/q <= v_index/sum(v) <= p_max/q (both bounds, one proof, m = 3).

    Same soundness precondition and completeness bound as `prove_share`.
    ProvingError if either bound fails, the values sum to zero, a difference
    is 2^64 or more, or the openings do not open the commitments.
    """
    commitments, openings = list(commitments), list(openings)
    error = _share_in_range_error(len(commitments), index, p, p_max, q)
    total = _share_total("share-in-range claim", error, commitments, openings)
    above = openings[index].scale(q) - total.scale(p)
    below = total.scale(p_max) - openings[index].scale(q)
    if above.value < 0 or below.value < 0:
        raise ProvingError("share-in-range claim: the claim is false")
    if max(above.value, below.value) >= VALUE_BOUND:
        raise ProvingError("share-in-range claim: true, but a difference is too large for a 64-bit proof")
    _bind_share_in_range(transcript, commitments, index, p, p_max, q)
    return _prove(
        transcript, share_in_range_statements(commitments, index, p, p_max, q), [above, below, total - Opening(1, 0)]
    )


def share_in_range_batch_statement(
    transcript: Transcript, commitments: Sequence[Point], index: int, p: int, p_max: int, q: int, proof: RangeProof
) -> RangeStatement:
    """Bind the share-in-range claim into `transcript`; return the range statement to verify (or batch)."""
    commitments = list(commitments)
    _refuse_statement("share-in-range", _share_in_range_error(len(commitments), index, p, p_max, q), commitments)
    _bind_share_in_range(transcript, commitments, index, p, p_max, q)
    return RangeStatement(transcript, tuple(share_in_range_statements(commitments, index, p, p_max, q)), proof, BITS)


def verify_share_in_range(
    transcript: Transcript, commitments: Sequence[Point], index: int, p: int, p_max: int, q: int, proof: RangeProof
) -> None:
    """Check a share-in-range proof. Raises ProofError."""
    _verify(share_in_range_batch_statement(transcript, commitments, index, p, p_max, q, proof))


# --------------------------------------------------------------------------- non-negative


def prove_nonnegative(transcript: Transcript, commitment: Point, opening: Opening) -> RangeProof:
    """Prove 0 <= v < 2^64 for C = v*G + r*H (e.g. capacity - cumulative >= 0). ProvingError if not."""
    _check_opens(commitment, opening, "the commitment")
    if not 0 <= opening.value < VALUE_BOUND:
        raise ProvingError("non-negative claim: the value is outside [0, 2^64)")
    _bind_nonnegative(transcript, commitment)
    return _prove(transcript, [commitment], [opening])


def nonnegative_batch_statement(transcript: Transcript, commitment: Point, proof: RangeProof) -> RangeStatement:
    """Bind the non-negative claim into `transcript`; return the range statement to verify (or batch)."""
    if not isinstance(commitment, Point):
        raise ProofError("nonnegative", "the commitment must be a Point")
    _bind_nonnegative(transcript, commitment)
    return RangeStatement(transcript, (commitment,), proof, BITS)


def verify_nonnegative(transcript: Transcript, commitment: Point, proof: RangeProof) -> None:
    """Check a proof that 0 <= v < 2^64. Raises ProofError."""
    _verify(nonnegative_batch_statement(transcript, commitment, proof))


def _refuse_statement(claim: str, error: str | None, commitments: Sequence[Point]) -> None:
    """ProofError(claim, ...) for bad public parameters (`error`) or a commitment that is not a Point."""
    if error:
        raise ProofError(claim, error)
    if any(not isinstance(c, Point) for c in commitments):
        raise ProofError(claim, "commitments must be Points")


def _verify(statement: RangeStatement) -> None:
    verify_range(statement.transcript, list(statement.commitments), statement.proof, statement.n)
