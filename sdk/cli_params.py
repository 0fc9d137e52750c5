"""Typed command-line parameters for `oretrace`: every value is checked before anything is signed.

Each checker is a click/typer callback that either returns the normalised
value or raises `typer.BadParameter` (exit 2, "Invalid value for '--x': ..."),
so a user's mistake never reaches the prover, the signer or the server, and
never prints a traceback. The limits are the ledger's own (`ledger.models`):

| value            | rule                                                          |
|------------------|---------------------------------------------------------------|
| ids              | `^[A-Za-z0-9_.:-]{1,64}$` (org, site, lot, attestation, key)  |
| country          | ISO 3166-1 alpha-2 (assigned codes, `iso3166` package); case-insensitive |
| latitude         | finite, -90 .. 90 degrees                                     |
| longitude        | finite, -180 .. 180 degrees                                   |
| grams            | integers 1 .. 2^53-1 (I-JSON's exact range, `JSON_SAFE_MAX`)  |
| share p / q      | 0 <= p <= q, 1 <= q < 2^16                                    |
| text             | at most 200 characters (names, products, regions)             |
| output file      | its directory exists and is writable; not a directory itself  |

Enumerations (roles, origin classes, claim kinds, processes) are `Enum`s, so
`--help` lists their values and click refuses anything else.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from enum import Enum
from pathlib import Path

import typer
from iso3166 import countries_by_alpha2

from ledger.models import CLASS_SETS, JSON_SAFE_MAX, LOSS_CAPS, ORIGIN_CLASSES, ClaimKind, Role

IDENT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
TEXT_MAX = 200
SHARE_MAX = 2**16 - 1

RoleChoice = Enum("RoleChoice", {r.value: r.value for r in Role if r is not Role.operator}, type=str)
OriginClassChoice = Enum("OriginClassChoice", {k: k for k in ORIGIN_CLASSES}, type=str)
#: What a claim may be about: one origin class, or a class set (ledger.models.CLASS_SETS).
ClaimClassChoice = Enum("ClaimClassChoice", {k: k for k in (*ORIGIN_CLASSES, *CLASS_SETS)}, type=str)
ClaimKindChoice = Enum("ClaimKindChoice", {k.value: k.value for k in ClaimKind}, type=str)
ProcessChoice = Enum("ProcessChoice", {k: k for k in LOSS_CAPS}, type=str)


def ident(value: str | None) -> str | None:
    """An oretrace identifier (1-64 of A-Z a-z 0-9 _ . : -); None passes (optional options)."""
    if value is None:
        return None
    if not IDENT_RE.match(value):
        raise typer.BadParameter(f"{value!r} is not an id: use 1 to 64 letters, digits, '_', '.', ':' or '-'")
    return value


def idents(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [ident(v) for v in values]


def country(value: str | None) -> str | None:
    """An assigned ISO 3166-1 alpha-2 code, upper-cased ("de" -> "DE")."""
    if value is None:
        return None
    code = value.strip().upper()
    if code not in countries_by_alpha2:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 3166-1 alpha-2 country code (two letters, e.g. CD, DE, FI, CN)"
        )
    return code


def _coordinate(value: float, bound: float, what: str) -> float:
    if not math.isfinite(value) or not -bound <= value <= bound:
        raise typer.BadParameter(f"{value} is not a {what} (degrees, -{bound:g} to {bound:g})")
    return value


def latitude(value: float) -> float:
    return _coordinate(value, 90, "latitude")


def longitude(value: float) -> float:
    return _coordinate(value, 180, "longitude")


def text(value: str | None) -> str | None:
    """Free text (a name, a product, a region) of at most 200 characters."""
    if value is not None and len(value) > TEXT_MAX:
        raise typer.BadParameter(f"at most {TEXT_MAX} characters ({len(value)} given)")
    return value


def parse_output(value: str) -> tuple[str, int]:
    """`PRODUCT=GRAMS` (one '=', a non-empty product, whole grams 1 .. 2^53-1; '_' separators allowed)."""
    if value.count("=") != 1:
        raise typer.BadParameter(f"{value!r}: expected PRODUCT=GRAMS with exactly one '='")
    product, grams = (part.strip() for part in value.split("="))
    if not product:
        raise typer.BadParameter(f"{value!r}: the product is empty (expected PRODUCT=GRAMS)")
    text(product)
    try:
        amount = int(grams.replace("_", ""))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: GRAMS must be a whole number of grams") from None
    if not 1 <= amount <= JSON_SAFE_MAX:
        raise typer.BadParameter(f"{value!r}: GRAMS must be between 1 and {JSON_SAFE_MAX:,}")
    return product, amount


def parse_outputs(values: list[str]) -> list[tuple[str, int]]:
    return [parse_output(v) for v in values]


def probe_writable_dir(directory: Path) -> str | None:
    """None if a file can be created in `directory`, else why not (nothing is left behind)."""
    if not directory.exists():
        return f"the directory {directory} does not exist (create it first: mkdir -p {directory})"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    probe = directory / f".oretrace-probe-{secrets.token_hex(6)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return f"cannot write in {directory}: {exc.strerror}"
    os.close(fd)
    os.unlink(probe)
    return None


def output_file(value: Path | None) -> Path | None:
    """A file the command will write: not a directory, in an existing writable directory."""
    if value is None:
        return None
    if value.is_dir():
        raise typer.BadParameter(f"{value} is a directory; give a file name, e.g. {value / 'bundle.json'}")
    if value.exists() and not os.access(value, os.W_OK):
        raise typer.BadParameter(f"{value} is not writable")
    problem = probe_writable_dir(value.parent if str(value.parent) else Path("."))
    if problem:
        raise typer.BadParameter(problem)
    return value


GRAMS = {"min": 1, "max": JSON_SAFE_MAX}
"""Range of an amount of contained cobalt, integer grams (typer Option keyword arguments)."""


def hex_key(value: str | None) -> str | None:
    """A 32-byte public key as 64 hexadecimal characters (lower-cased)."""
    if value is None:
        return None
    key = value.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise typer.BadParameter("expected a public key of 64 hexadecimal characters")
    return key
