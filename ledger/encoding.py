"""Canonical bytes and derived identifiers.

Everything that is signed or hashed is first turned into RFC 8785 (JSON
Canonicalization Scheme) bytes, so the server, the SDK and an offline verifier
written in another language agree on the exact bytes. Identifiers of lots,
claims, attestations and events are derived from signed data, so a publisher
cannot squat or collide with somebody else's ids.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
from collections.abc import Iterator
from itertools import accumulate, count
from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of plain JSON data (dicts, lists, str, int, bool, None)."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derive_id(prefix: str, network: str, signer: str, nonce: str, index: int = 0) -> str:
    """A 96-bit identifier bound to the network, the signer and its (unique) nonce."""
    material = canonical_json(
        {"kind": prefix, "network": network, "signer": signer, "nonce": nonce, "index": index}
    )
    return f"{prefix}_{hashlib.sha256(b'oretrace/id/v1' + material).hexdigest()[:24]}"


# --------------------------------------------------------------------------- strict JSON reading

#: Deepest nesting accepted in any JSON document read from outside (request
#: bodies, envelopes, bundles). The deepest honest document, a disclosure
#: bundle, nests 7 levels.
MAX_JSON_DEPTH = 64
#: Longest integer literal accepted (2^64 has 20 digits; I-JSON's exact range
#: 2^53 has 16). Longer literals are refused before Python converts them.
MAX_INT_DIGITS = 40


class StrictJSONError(ValueError):
    """A JSON text outside I-JSON (RFC 7493): unparsable, a duplicate member
    name, a lone surrogate, NaN or Infinity, an over-long integer, or nesting
    deeper than allowed. The message says what and where, for the user."""


def _reject_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number (RFC 8259 section 6)")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: what NaN/Infinity are refused for, reached by overflow
        raise StrictJSONError(f"the number {text[:40]} is beyond IEEE 754 double range (RFC 7493 section 2.2)")
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise StrictJSONError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJSONError(f"duplicate member name {key!r} (RFC 7493 section 2.3)")
        result[key] = value
    return result


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


#: A JSON escape decoding to a UTF-16 surrogate (U+D800-U+DFFF): in text decoded from
#: UTF-8 (which cannot hold a surrogate itself) the only way to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
#: '[' and '{' step +1, ']' and '}' step -1, as byte values 2 and 0 (one is subtracted per step).
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
#: Brackets per C-level step of the depth scan (a few ms of work each).
_DEPTH_CHUNK = 64 * 1024


def _nested_deeper_than(text: str, max_depth: int) -> bool:
    """Does `text` open more than `max_depth` arrays/objects at once (strings skipped)?

    Checked before json.loads: its C scanner recurses once per level and, when a
    library has raised the recursion limit (py_ecc sets 100,000), overflows the C
    stack on deep input (a segmentation fault, not a RecursionError). Linear time,
    in C-level loops (regular expressions, accumulate). The running depth is
    computed `_DEPTH_CHUNK` brackets per C call, stopping at the first chunk
    that goes too deep: one C call over a whole 1 MiB body held Python's GIL
    for its whole duration (tens of ms), stalling a server's event loop while
    another thread read a body."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    if brackets.count("[") + brackets.count("{") <= max_depth:
        return False
    steps = brackets.encode("ascii").translate(_STEPS)
    total = 0  # sum of the steps so far; the depth after i brackets is that sum minus i
    for start in range(0, len(steps), _DEPTH_CHUNK):
        chunk = steps[start : start + _DEPTH_CHUNK]
        if max(map(operator.sub, accumulate(chunk, initial=total), count(start))) > max_depth:
            return True
        total += sum(chunk)
    return False


def _short(path: str, limit: int = 80) -> str:
    return path if len(path) <= limit else path[: limit - 3] + "..."


def check_i_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Walk parsed JSON iteratively: nesting at most `max_depth`, no lone
    surrogate in any string or member name (RFC 7493 section 2.1).
    StrictJSONError naming the path otherwise.

    Memory is bounded by the depth, not the size: one iterator per open
    container, and no path string while searching (a path and a stack entry
    per value made a 1 MiB body of small arrays peak at ~46 MB); a fault
    found is walked to again with paths, to name it."""
    if _violation(value, max_depth, with_paths=False) is not None:
        raise StrictJSONError(_violation(value, max_depth, with_paths=True))


def _violation(value: Any, max_depth: int, *, with_paths: bool) -> str | None:
    """The first fault check_i_json reports (document order), or None."""
    stack: list[tuple[Iterator[tuple[Any, str]], int]] = [(iter(((value, "$"),)), 1)]
    while stack:
        items, depth = stack[-1]
        entry = next(items, None)
        if entry is None:
            stack.pop()
            continue
        node, path = entry
        if isinstance(node, dict | list) and depth > max_depth:
            return f"nested deeper than {max_depth} levels at {_short(path)}"
        if isinstance(node, dict):
            for key in node:
                if _has_lone_surrogate(key):
                    return f"a member name at {_short(path)} holds a lone UTF-16 surrogate"
            stack.append((_children(node, path, with_paths), depth + 1))
        elif isinstance(node, list):
            stack.append((_children(node, path, with_paths), depth + 1))
        elif isinstance(node, str) and _has_lone_surrogate(node):
            return f"the string at {_short(path)} holds a lone UTF-16 surrogate"
    return None


def _children(node: dict | list, path: str, with_paths: bool) -> Iterator[tuple[Any, str]]:
    """(value, path) of each member or element of `node`; the parent's path unless `with_paths`."""
    if isinstance(node, dict):
        for key, item in node.items():
            yield item, f"{path}.{key}" if with_paths else path
    else:
        for i, item in enumerate(node):
            yield item, f"{path}[{i}]" if with_paths else path


def loads_strict(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, max_values: int | None = None) -> Any:
    """Parse an I-JSON text (RFC 7493) from outside.

    bytes must be UTF-8. Raises StrictJSONError (a ValueError) for anything
    that is not I-JSON or nests deeper than `max_depth`; never RecursionError;
    TooManyJSONValues (a StrictJSONError) if `max_values` is given and the text
    holds more values than that (`check_value_count`).
    Cost is linear in the input size. The walk of the parsed value for lone
    surrogates (check_i_json) runs only when the text could hold one (an
    escape of U+D800-U+DFFF, or a str given with a surrogate in it): the
    depth is already bounded by the scan before parsing, and the walk is the
    costliest step in Python (about 3/4 of the CPU for 1 MiB of small values)."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJSONError(f"not JSON: not UTF-8 at byte {exc.start}") from None
        may_hold_surrogates = _SURROGATE_ESCAPE.search(data) is not None
    else:
        may_hold_surrogates = _SURROGATE_ESCAPE.search(data) is not None or _has_lone_surrogate(data)
    if _nested_deeper_than(data, max_depth):
        raise StrictJSONError(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(
            data,
            object_pairs_hook=_object_without_duplicates,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except RecursionError:
        raise StrictJSONError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # raised by our hooks (StrictJSONError) or int() limits
        if isinstance(exc, StrictJSONError):
            raise
        raise StrictJSONError(str(exc)) from None
    if may_hold_surrogates:
        check_i_json(value, max_depth=max_depth)
    if max_values is not None:
        check_value_count(value, max_values)
    return value


class TooManyJSONValues(StrictJSONError):
    """A JSON text holds more values than its reader accepts (`check_value_count`)."""


def check_value_count(value: Any, max_values: int) -> None:
    """TooManyJSONValues if the parsed JSON `value` holds more than `max_values` values:
    every object, array, string, number, true, false and null counts one (member
    names do not: they belong to their object). Stops at the first value over the
    limit; the work and the stack are bounded by the value's size.

    Why a count beside the byte and depth limits: what a decoded body costs its
    reader - memory, the time to build or copy its objects, to free them - grows
    with its number of values, not its bytes. 1 MiB of `[[[[[]]]]],...` is ~520,000
    arrays (~25 MB of Python objects), while the largest envelope the rules accept
    holds a few hundred values (its proofs are single hex strings)."""
    seen = 0
    pending = [value]
    while pending:
        node = pending.pop()
        seen += 1
        if seen > max_values:
            raise TooManyJSONValues(f"more than {max_values} JSON values")
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
