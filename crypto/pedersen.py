"""Pedersen commitments C = v*G + r*H over BLS12-381 G1.

Perfectly hiding (r uniform makes C uniform), computationally binding (an
opening to two values reveals log_G(H)). Homomorphic: the sum of commitments
commits to the sum of values with the sum of blindings, which is what makes
per-class mass balance checkable on hidden volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .generators import G, H
from .group import ORDER, Point, msm, random_scalar


@dataclass(frozen=True)
class Opening:
    """What only the owner knows: the committed value and its blinding."""

    value: int
    blinding: int

    def __add__(self, other: Opening) -> Opening:
        return Opening(self.value + other.value, (self.blinding + other.blinding) % ORDER)

    def __sub__(self, other: Opening) -> Opening:
        return Opening(self.value - other.value, (self.blinding - other.blinding) % ORDER)

    def scale(self, k: int) -> Opening:
        return Opening(self.value * k, (self.blinding * k) % ORDER)

    @classmethod
    def zero(cls) -> Opening:
        return cls(0, 0)

    @classmethod
    def fresh(cls, value: int) -> Opening:
        return cls(value, random_scalar())


def commit(value: int, blinding: int) -> Point:
    return msm([G(), H()], [value, blinding])


def commit_opening(opening: Opening) -> Point:
    return commit(opening.value, opening.blinding)


def verify_opening(commitment: Point, opening: Opening) -> bool:
    return commit_opening(opening) == commitment


def add(commitments: list[Point]) -> Point:
    """Homomorphic sum of commitments (the identity for an empty list)."""
    total = Point.identity()
    for c in commitments:
        total = total + c
    return total
