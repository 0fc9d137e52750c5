"""Fiat-Shamir transcripts with domain separation that cannot be forgotten.

A `Transcript` is a running SHA-512 over length-prefixed, labelled fields:

    absorb(label, data) = u32be(len(label)) || label || u64be(len(data)) || data

It starts with the protocol id (`PROTOCOL`, versioned), the caller's statement
label and the caller's context (lot ids, signer, network id, ...), so that a
proof made for one statement or context can never be replayed under another.
Every proof then absorbs its own domain separator, its parameters and *all* of
its public inputs (commitments and the generators it uses) before it draws a
challenge. The verifier recomputes every challenge itself; no challenge is
ever read from a proof (the "Frozen Heart" family of breaks).

Challenges are derived by wide reduction: 64 bytes of SHA-512 reduced mod the
group order (bias < 2^-256). The challenge itself is absorbed back, so two
challenges with the same label differ.

`rng(witness)` follows Merlin's TranscriptRng: prover nonces come from the
transcript state, the secret witness *and* fresh OS randomness, so they neither
leak the witness (public-only derivation) nor depend on a good OS RNG alone.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable

from .group import ORDER, POINT_BYTES, SCALAR_BYTES, Point, scalar_to_bytes

PROTOCOL = b"oretrace/v2"


_HEADERS: dict[tuple[bytes, int], bytes] = {}


def _header(label: bytes, length: int) -> bytes:
    """u32be(len(label)) || label || u64be(length), cached: labels and lengths
    repeat (a proof absorbs dozens of 48-byte points under a few labels)."""
    key = (label, length)
    head = _HEADERS.get(key)
    if head is None:
        head = struct.pack(">I", len(label)) + label + struct.pack(">Q", length)
        if len(_HEADERS) < 4096:  # labels are constants; bounded anyway
            _HEADERS[key] = head
    return head


def _frame(label: bytes, data: bytes) -> bytes:
    return _header(label, len(data)) + data


_CHALLENGE_FRAMES: dict[bytes, bytes] = {}


def _challenge_frame(label: bytes, counter: int) -> bytes:
    """frame("challenge", label || u32be(counter)); cached for counter 0 (the only
    one used in practice) and the constant labels, bounded like `_HEADERS`."""
    if counter:
        return _frame(b"challenge", label + struct.pack(">I", counter))
    frame = _CHALLENGE_FRAMES.get(label)
    if frame is None:
        frame = _frame(b"challenge", label + struct.pack(">I", 0))
        if len(_CHALLENGE_FRAMES) < 4096:
            _CHALLENGE_FRAMES[label] = frame
    return frame


class _Recorder:
    """Stands in for the hash of a `Transcript` that records its frames (`Frames`):
    only `update` exists, so a challenge or a clone cannot be recorded."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        self.parts.append(data)


class Frames:
    """A fixed run of transcript fields, framed once and absorbed many times
    (`Transcript.append_frames`).

    `record(t)` appends the fields with the ordinary `Transcript` methods, so the
    bytes absorbed are exactly those of calling the same methods on the live
    transcript (same labels, lengths, domain separation); it may not draw
    challenges. A verifier replaying many proofs with the same parameters frames
    their common fields once instead of once per proof.
    """

    __slots__ = ("data",)

    def __init__(self, record: Callable[[Transcript], None]):
        t = Transcript.__new__(Transcript)
        t._h = recorder = _Recorder()
        record(t)
        self.data = b"".join(recorder.parts)


class Transcript:
    """A Fiat-Shamir transcript bound to a statement and its context."""

    __slots__ = ("_h",)

    def __init__(self, statement: bytes, context: bytes):
        self._h = hashlib.sha512()
        self._absorb(b"protocol", PROTOCOL)
        self._absorb(b"statement", statement)
        self._absorb(b"context", context)

    def _absorb(self, label: bytes, data: bytes) -> None:
        self._h.update(_header(label, len(data)) + data)

    def clone(self) -> Transcript:
        twin = Transcript.__new__(Transcript)
        twin._h = self._h.copy()
        return twin

    def append_frames(self, frames: Frames) -> None:
        """Absorb recorded fields: the same as calling the methods they were recorded with."""
        self._h.update(frames.data)

    def domain_separator(self, name: bytes) -> None:
        self._absorb(b"dom-sep", name)

    def append_message(self, label: bytes, data: bytes) -> None:
        self._absorb(label, data)

    def append_u64(self, label: bytes, value: int) -> None:
        self._absorb(label, struct.pack(">Q", value))

    def append_point(self, label: bytes, point: Point) -> None:
        self._h.update(_header(label, POINT_BYTES) + point.to_bytes())

    def append_points(self, label: bytes, points: Iterable[Point]) -> None:
        points = list(points)
        self.append_u64(label + b".len", len(points))
        head = _header(label, POINT_BYTES)
        for p in points:
            self._h.update(head + p.to_bytes())

    def append_scalar(self, label: bytes, k: int) -> None:
        self._absorb(label, scalar_to_bytes(k))

    def challenge_scalar(self, label: bytes) -> int:
        """A non-zero challenge, bound to everything absorbed so far."""
        label = bytes(label)  # a bytearray too (the challenge frames are cached by label)
        counter = 0
        while True:
            h = self._h.copy()
            h.update(_challenge_frame(label, counter))
            c = int.from_bytes(h.digest(), "big") % ORDER
            if c:  # c < r: its 32-byte encoding is scalar_to_bytes(c) without a second reduction
                self._absorb(b"challenge-out", label + c.to_bytes(SCALAR_BYTES, "big"))
                return c
            counter += 1  # probability 2^-255: never in practice

    def rng(self, witness: Iterable[int | bytes]) -> TranscriptRng:
        """A nonce generator bound to this transcript, the witness and OS randomness."""
        h = self._h.copy()
        for w in witness:
            data = w if isinstance(w, bytes) else scalar_to_bytes(w)
            h.update(_frame(b"witness", data))
        h.update(_frame(b"os-rng", os.urandom(32)))
        return TranscriptRng(h.digest())


class TranscriptRng:
    """Deterministic stream of scalars from a 64-byte seed (see Transcript.rng)."""

    __slots__ = ("_seed", "_counter")

    def __init__(self, seed: bytes):
        self._seed = seed
        self._counter = 0

    def scalar(self) -> int:
        while True:
            self._counter += 1
            d = hashlib.sha512(self._seed + struct.pack(">Q", self._counter)).digest()
            k = int.from_bytes(d, "big") % ORDER
            if k:
                return k

    def scalars(self, n: int) -> list[int]:
        return [self.scalar() for _ in range(n)]
