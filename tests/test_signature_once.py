"""The envelope signature is verified once per publication (`ledger.envelope.signature_is_valid`).

The server checks the signer (and the signature) before its prefetch, so that
no work that grows with the ledger is done for an unauthenticated envelope,
and `rules.apply` checks it again in the verifier. The second check is now a
lookup of the first one's result, remembered on the envelope object for the
key it was verified under. These tests count real Ed25519 verifications
(pynacl's `VerifyKey.verify`, wrapped to count) and check that the memo
cannot stand in for a check it did not make: another key, a changed
envelope, an envelope decoded afresh from the same bytes, a bad signature.
"""

from __future__ import annotations

import pickle

import pytest
from nacl.signing import SigningKey

import ledger.envelope as envelope_module
from ledger.envelope import parse_envelope, signature_is_valid
from ledger.errors import Code, Rejection

from test_verification_batches import refiner_lots  # noqa: F401 - a fixture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def verifications(monkeypatch) -> list[bytes]:
    """The messages of every Ed25519 verification made from now on in this test."""
    seen: list[bytes] = []
    real = envelope_module.VerifyKey

    class CountingVerifyKey(real):
        def verify(self, smessage, signature=None, encoder=None):
            seen.append(smessage)
            return super().verify(smessage, signature)

    monkeypatch.setattr(envelope_module, "VerifyKey", CountingVerifyKey)
    return seen


async def test_a_claim_walking_its_ancestry_is_verified_once_and_a_bad_signature_still_refused(
    world, ingestion, refiner_lots, verifications
):
    """A claim with an ancestry walk (`ancestry_excludes`) is the publication whose
    signature was checked twice: before the walk, and in the rules. Now once. A
    transformation (no walk: checked in the rules only) stays at once."""
    lots, _ = refiner_lots
    outputs = []
    for lot_id in lots[:2]:
        envelope, output_ids = world.transform("ref-vb", [lot_id])
        verifications.clear()
        assert (await ingestion.publish(envelope.to_json())).event_id == envelope.event_id
        assert verifications == [envelope.signed_message()]  # once, over the received bytes
        outputs.append(output_ids[0])
    for lot_id in outputs:
        claim, _ = world.claim_excludes("ref-vb", lot_id)
        verifications.clear()
        assert (await ingestion.publish(claim.to_json())).event_id == claim.event_id
        assert verifications == [claim.signed_message()]
    # a forged signature: refused by the check before the walk, and nothing remembered
    forged = world.claim_excludes("ref-vb", outputs[0])[0].to_json()
    last = forged["signature"][-2:]
    forged["signature"] = forged["signature"][:-2] + ("00" if last != "00" else "01")
    verifications.clear()
    with pytest.raises(Rejection) as refused:
        await ingestion.publish(forged)
    assert refused.value.code is Code.BAD_SIGNATURE
    assert len(verifications) == 1


def test_the_memo_answers_only_for_the_key_and_the_envelope_it_checked(world, verifications):
    envelope = world.register("memo-org", "trader")
    root = world.root_key.verify_key.encode().hex()
    other = SigningKey.generate().verify_key.encode().hex()
    assert signature_is_valid(envelope, root)
    assert signature_is_valid(envelope, root)
    assert len(verifications) == 1  # the second answer is the memo
    for _ in range(2):  # another key is verified every time, and refused
        assert not signature_is_valid(envelope, other)
    assert len(verifications) == 3
    assert not signature_is_valid(envelope, "zz" * 32)  # a malformed key: refused, no memo
    # the same bytes decoded afresh carry no memo: verified again
    fresh = parse_envelope(envelope.to_json())
    assert signature_is_valid(fresh, root)
    assert len(verifications) == 4
    # a changed envelope (new nonce, same signature) drops it, and is refused
    changed = envelope.model_copy(update={"nonce": "0" * 32})
    assert not signature_is_valid(changed, root)
    assert len(verifications) == 5
    # equality and the JSON form ignore it
    assert envelope == fresh and envelope.to_json() == fresh.to_json()


def test_the_memo_travels_to_a_verifier_process_with_the_envelope(world, verifications):
    """Process mode pickles the envelope the server checked: the worker's rules then
    find the same key's result (the server's own, not a received claim)."""
    envelope = world.register("memo-org-2", "trader")
    root = world.root_key.verify_key.encode().hex()
    assert signature_is_valid(envelope, root)
    copy = pickle.loads(pickle.dumps(envelope))
    assert signature_is_valid(copy, root)
    assert len(verifications) == 1
    assert copy.to_json() == envelope.to_json()
