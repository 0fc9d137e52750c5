"""Sealed openings: the only place amounts and blindings exist outside a wallet."""

from __future__ import annotations

import base64
import json

import pytest
from nacl.public import PrivateKey, PublicKey, SealedBox

from crypto.group import ORDER
from crypto.pedersen import Opening
from ledger.encoding import canonical_json
from ledger.openings import (
    SealedOpeningError,
    capacity_openings,
    capacity_plaintext,
    lot_openings,
    lots_plaintext,
    seal,
    unseal,
)

KEY = PrivateKey.generate()
PUBLIC = bytes(KEY.public_key).hex()


def raw_seal(data: bytes) -> str:
    return base64.b64encode(SealedBox(PublicKey(bytes.fromhex(PUBLIC))).encrypt(data)).decode()


def test_lot_openings_round_trip_as_canonical_json():
    lots = {"lot_1": {"industrial": Opening(5, 7), "recycled_post_consumer": Opening(0, ORDER - 1)}}
    plaintext = lots_plaintext(lots)
    assert plaintext == {
        "v": 1,
        "lots": {
            "lot_1": {
                "industrial": {"value": 5, "blinding": f"{7:064x}"},
                "recycled_post_consumer": {"value": 0, "blinding": f"{ORDER - 1:064x}"},
            }
        },
    }
    sealed = seal(plaintext, PUBLIC)
    body = canonical_json(plaintext)  # then spaces: the width of two 20-digit values instead of "5" and "0"
    assert SealedBox(KEY).decrypt(base64.b64decode(sealed)) == body + b" " * 38
    assert lot_openings(unseal(sealed, KEY)) == lots
    assert lot_openings(unseal(sealed, bytes(KEY).hex())) == lots  # the key may be given as hex


def test_capacity_opening_round_trip():
    sealed = seal(capacity_plaintext("att_1", Opening(10**9, 42)), PUBLIC)
    assert capacity_openings(unseal(sealed, KEY)) == {"att_1": Opening(10**9, 42)}
    with pytest.raises(SealedOpeningError, match="lots"):
        lot_openings(unseal(sealed, KEY))


def test_only_the_recipient_can_open():
    sealed = seal(lots_plaintext({"lot_1": {"artisanal": Opening(1, 2)}}), PUBLIC)
    with pytest.raises(SealedOpeningError, match="wrong key"):
        unseal(sealed, PrivateKey.generate())
    with pytest.raises(SealedOpeningError):
        unseal("not base64!", KEY)
    with pytest.raises(SealedOpeningError, match="recipient key"):
        seal({"v": 1, "lots": {}}, "zz")


def test_amounts_outside_the_range_cannot_be_sealed():
    with pytest.raises(SealedOpeningError, match="2\\^64"):
        lots_plaintext({"lot_1": {"industrial": Opening(2**64, 1)}})


@pytest.mark.parametrize(
    "plaintext, message",
    [
        ({"v": 2, "lots": {}}, "format"),
        ({"v": 1}, "exactly one"),
        ({"v": 1, "lots": {}, "capacity": {}}, "exactly one"),
        ({"v": 1, "lots": {"l": {"gold": {"value": 1, "blinding": "00" * 32}}}}, "origin class"),
        ({"v": 1, "lots": {"l": {"industrial": {"value": -1, "blinding": "00" * 32}}}}, "value"),
        ({"v": 1, "lots": {"l": {"industrial": {"value": True, "blinding": "00" * 32}}}}, "value"),
        ({"v": 1, "lots": {"l": {"industrial": {"value": 1, "blinding": "AB" * 32}}}}, "blinding"),
        ({"v": 1, "lots": {"l": {"industrial": {"value": 1, "blinding": "ff" * 32}}}}, "group order"),
        ({"v": 1, "capacity": {"a": {"value": 1}}}, "exactly 'value' and 'blinding'"),
    ],
)
def test_malformed_plaintexts_are_refused(plaintext, message):
    with pytest.raises(SealedOpeningError, match=message):
        unseal(raw_seal(json.dumps(plaintext).encode()), KEY)


# --------------------------------------------------------------------------- fixed length (issue 7 point 3)

AMOUNTS_OF_EVERY_SIZE = (0, 7, 10**6, 2**64 - 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda v: lots_plaintext({"lot_" + "a" * 24: {"industrial": Opening(v, 3)}}),  # issuance
        lambda v: lots_plaintext({"lot_" + "b" * 24: {"industrial": Opening(v, 5), "recycled_post_consumer": Opening(v // 2, 6)}}),
        lambda v: lots_plaintext({"lot_" + "c" * 24: {"artisanal": Opening(v, 7)},
                                  "lot_" + "d" * 24: {"artisanal": Opening(v // 3, 8)}}),  # fmt: skip
        lambda v: capacity_plaintext("att_" + "e" * 24, Opening(v, 9)),
    ],
    ids=["issue", "transfer-two-classes", "transform-two-outputs", "capacity"],
)
def test_box_length_does_not_depend_on_the_amount(make):
    lengths = {len(seal(make(v), PUBLIC)) for v in AMOUNTS_OF_EVERY_SIZE}
    assert len(lengths) == 1, lengths
    for v in AMOUNTS_OF_EVERY_SIZE:  # and every box still opens to exactly its plaintext
        assert unseal(seal(make(v), PUBLIC), KEY) == make(v)


@pytest.mark.parametrize("padding", [b"", b" ", b" " * 100, b"\n" * 14])
def test_a_plaintext_not_padded_to_its_fixed_length_is_refused(padding):
    body = canonical_json(lots_plaintext({"l": {"industrial": Opening(7, 1)}}))
    with pytest.raises(SealedOpeningError, match="padded"):
        unseal(raw_seal(body + padding), KEY)
