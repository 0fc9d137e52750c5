"""ledger.checkpoint: the C2SP signed-note example (c2sp.org/signed-note, "Example"),
checkpoints refused for each kind of fault, cosignatures (c2sp.org/tlog-cosignature)."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey

from ledger import checkpoint as cp
from ledger.checkpoint import Checkpoint, NoteError

# c2sp.org/signed-note, section "Verifier keys / Example" (CC-BY 4.0, C2SP authors)
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# c2sp.org/tlog-checkpoint example (no key published: parsed, not verified)
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)

LOG_KEY = SigningKey(bytes(range(32)))
OTHER_KEY = SigningKey(bytes(range(1, 33)))
ORIGIN = "oretrace.example/log/testnet"
ROOT = bytes(range(32))


def test_spec_note_verifies_with_spec_vkey():
    key = cp.parse_vkey(SPEC_VKEY)
    assert key.name == "example.com/foo" and key.key_id.hex() == "530d903a" and key.vkey() == SPEC_VKEY
    note = cp.parse_note(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert cp.verify_note(note, [key]) == [key]
    assert note.encode() == SPEC_NOTE.encode()
    tampered = SPEC_NOTE.replace("example message", "exemple message")
    with pytest.raises(NoteError, match="bad signature"):
        cp.verify_note(cp.parse_note(tampered), [key])


def test_spec_checkpoint_parses():
    note = cp.parse_note(SPEC_CHECKPOINT)
    c = cp.parse_checkpoint_body(note.text)
    assert (c.origin, c.size) == ("example.com/behind-the-sofa", 20852163)
    assert c.body() == note.text


def signed(origin=ORIGIN, size=5, root=ROOT, key=LOG_KEY, name=ORIGIN) -> bytes:
    return cp.sign_checkpoint(Checkpoint(origin, size, root), name, key).encode()


def test_checkpoint_round_trip():
    key = cp.key_from_signing_key(ORIGIN, LOG_KEY)
    c, note = cp.open_checkpoint(signed(), ORIGIN, [key])
    assert (c.origin, c.size, c.root) == (ORIGIN, 5, ROOT)
    assert cp.parse_vkey(key.vkey()) == key


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (signed(origin="other.example/log"), "checkpoint of log"),
        (signed(name="oretrace.example/other"), "no signature by a trusted key"),
        (signed(key=OTHER_KEY), "no signature by a trusted key"),  # same name, other key: other key ID
        (signed().replace(b"\n5\n", b"\n6\n"), "bad signature"),
        (signed().replace(b"\n5\n", b"\n05\n"), "bad checkpoint size"),
        (signed().replace(b"\n5\n", b"\n-5\n"), "bad checkpoint size"),
        (signed().replace(b"\n5\n", b"\n" + b"9" * 5000 + b"\n"), "bad checkpoint size"),  # not a ValueError of int()
        (signed().replace(b"\n5\n", b"\n%d\n" % 2**63), "bad checkpoint size"),
        (signed().replace(b"\n5\n", b"\n\xd9\xa3\n"), "bad checkpoint size"),  # an Arabic-Indic digit
        (signed().replace(b"\n\n", b"\n"), "blank line"),
        (signed().replace("— ".encode(), b"- "), "malformed signature line"),
        (signed()[:-1], "blank line"),
        (signed().replace(b"\n5\n", b"\n5\r\n"), "control character"),
        (signed() + b"\xff", "UTF-8"),
        (b"oretrace.example/log/testnet\n5\n\n" + signed().split(b"\n\n")[1], "origin, size and root"),
        (signed().replace(base64.b64encode(ROOT), base64.b64encode(ROOT[:31])), "32-byte hash"),
    ],
)
def test_checkpoint_refused(data, match):
    with pytest.raises(NoteError, match=match):
        cp.open_checkpoint(data, ORIGIN, [cp.key_from_signing_key(ORIGIN, LOG_KEY)])


def test_wrong_key_hash_in_signature_is_ignored_then_refused():
    note = cp.parse_note(signed())
    sig = note.signatures[0]
    forged = cp.Note(note.text, (cp.Signature(sig.name, b"\x00\x00\x00\x00", sig.signature),))
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        cp.verify_note(forged, [cp.key_from_signing_key(ORIGIN, LOG_KEY)])


@pytest.mark.parametrize("bad", ["a+b", "name+530d903a", "n a+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
                                 "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
                                 "example.com/foo+530d903a+!!!"])
def test_bad_vkeys(bad):
    with pytest.raises(NoteError):
        cp.parse_vkey(bad)


def test_cosignature_round_trip_and_faults():
    witness = SigningKey(bytes([7] * 32))
    wkey = cp.key_from_signing_key("witness.example/w1", witness, cp.COSIGNATURE_V1)
    note = cp.parse_note(signed())
    cosig = cp.cosign(note.text, wkey.name, witness, 1_700_000_000)
    cosigned = note.with_signatures([cosig])
    reparsed = cp.parse_note(cosigned.encode())
    assert cp.verify_cosignatures(reparsed, [wkey]) == {"witness.example/w1": 1_700_000_000}
    # the log key still verifies, the cosignature is ignored by the log-key check
    cp.verify_note(reparsed, [cp.key_from_signing_key(ORIGIN, LOG_KEY)])
    # a cosignature moved to another checkpoint fails
    other = cp.parse_note(signed(size=6)).with_signatures([cosig])
    with pytest.raises(NoteError, match="bad cosignature"):
        cp.verify_cosignatures(other, [wkey])
    # re-dated cosignature fails
    redated = cp.Signature(cosig.name, cosig.key_id, (1_700_000_001).to_bytes(8, "big") + cosig.signature[8:])
    with pytest.raises(NoteError, match="bad cosignature"):
        cp.verify_cosignatures(note.with_signatures([redated]), [wkey])
    # an unknown witness contributes nothing
    stranger = cp.key_from_signing_key("witness.example/w2", SigningKey(bytes([8] * 32)), cp.COSIGNATURE_V1)
    assert cp.verify_cosignatures(reparsed, [stranger]) == {}
    # the key ID is type-separated: a 0x01 signature by the witness key is not a cosignature
    assert wkey.key_id != cp.key_from_signing_key(wkey.name, witness).key_id


def test_oretrace_vectors_in_docs_recompute():
    """docs/log.md's vectors (tests/vectors/log/oretrace_log_vectors.json) are what the code produces."""
    import json
    from pathlib import Path

    from ledger import merkle

    v = json.loads((Path(__file__).parent / "vectors" / "log" / "oretrace_log_vectors.json").read_text())
    leaves = [bytes.fromhex(x) for x in v["leaf_inputs_hex"]]
    tree = merkle.MemoryTree.from_entries(leaves)
    assert [merkle.leaf_hash(x).hex() for x in leaves] == v["leaf_hashes_hex"]
    assert {str(n): tree.root(n).hex() for n in range(9)} == v["roots_hex"]
    assert [h.hex() for h in tree.inclusion_proof(2, 7)] == v["inclusion"]["proof_hex"]
    assert [h.hex() for h in tree.consistency_proof(3, 7)] == v["consistency"]["proof_hex"]
    log_key = SigningKey(bytes.fromhex(v["log_key_seed_hex"]))
    origin = "oretrace.log/oretrace-demo"
    note = cp.sign_checkpoint(Checkpoint(origin, 7, tree.root(7)), origin, log_key)
    assert note.encode().decode() == v["checkpoint_note"]
    assert cp.key_from_signing_key(origin, log_key).vkey() == v["log_vkey"]
    witness = SigningKey(bytes.fromhex(v["witness_key_seed_hex"]))
    cosigned = note.with_signatures([cp.cosign(note.text, "witness.example/w1", witness, v["cosignature_timestamp"])])
    assert cosigned.encode().decode() == v["cosigned_note"]
    parsed = cp.parse_note(v["cosigned_note"])
    assert cp.verify_cosignatures(parsed, [cp.parse_vkey(v["witness_vkey"])]) == {"witness.example/w1": 1700000000}
