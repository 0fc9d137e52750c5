"""`Envelope.event_id` is computed once per envelope (issue 11), and stays the id
of exactly the canonical bytes: for every payload type the cached id equals the
one recomputed from the RFC 8785 bytes, a copy with changed fields gets its own
id, the cache changes neither equality nor the dumps, and a respelled envelope
is still refused after its genuine twin was decoded (and its id cached)."""

from __future__ import annotations

import json
import pickle

import pytest
from test_envelope_strict import DELETE, PAYLOAD_TYPES, one_of_each, respell

from ledger.encoding import canonical_json, sha256_hex
from ledger.envelope import Envelope, MalformedEnvelope, parse_envelope, sign


def recomputed(raw: dict) -> str:
    """The event id from first principles: SHA-256 of the RFC 8785 bytes."""
    return "evt_" + sha256_hex(canonical_json(raw))[:32]


@pytest.fixture(scope="module")
def samples() -> dict[str, dict]:
    found = one_of_each()
    assert set(found) == set(PAYLOAD_TYPES)
    return found


@pytest.mark.parametrize("kind", PAYLOAD_TYPES)
def test_cached_id_equals_the_recomputed_one(samples, kind):
    raw = samples[kind]
    parsed = parse_envelope(json.loads(json.dumps(raw)))
    assert parsed.event_id == recomputed(raw)
    assert parsed.event_id == parsed.event_id == recomputed(parsed.to_json())  # read again: same value
    lenient = Envelope.model_validate(raw)  # not through the strict decoder: computed on first access
    assert lenient.event_id == recomputed(raw)
    assert pickle.loads(pickle.dumps(parsed)).event_id == recomputed(raw)


@pytest.mark.parametrize("kind", PAYLOAD_TYPES)
def test_a_changed_copy_gets_the_id_of_its_own_bytes(samples, kind):
    parsed = parse_envelope(samples[kind])
    original = parsed.event_id
    for update in ({"signature": "ab" * 64}, {"nonce": "0" * 32}, {"signer": "someone-else"}):
        changed = parsed.model_copy(update=update)
        assert changed.event_id == recomputed(changed.to_json()) != original, update
    assert parsed.model_copy().event_id == original
    assert parsed.model_copy(deep=True).event_id == original


@pytest.mark.parametrize("kind", PAYLOAD_TYPES)
def test_the_cache_is_not_part_of_the_model(samples, kind):
    raw = samples[kind]
    parsed = parse_envelope(raw)
    _ = parsed.event_id
    fresh = Envelope.model_validate(raw)  # nothing cached yet
    assert parsed == fresh and fresh == parsed
    assert parsed.to_json() == raw
    assert parsed.model_dump(mode="json") == fresh.model_dump(mode="json")
    assert "event_id" not in json.dumps(parsed.to_json())


def test_signed_envelopes_have_the_id_of_their_bytes(samples):
    from nacl.signing import SigningKey

    issued = parse_envelope(samples["issue"])
    env = sign(issued.payload, network="oretrace-test", signer="mine-a", key_id="k1", signing_key=SigningKey.generate())
    assert env.event_id == recomputed(env.to_json())
    assert parse_envelope(env.to_json()).event_id == env.event_id


#: Respellings every envelope has a place for: (dotted path, change).
RESPELLINGS = [
    ("timestamp", lambda v: v.replace("Z", "+00:00")),
    ("timestamp", lambda v: v.replace("Z", ".000Z")),
    ("nonce", str.upper),
    ("signature", str.upper),
    ("key_id", DELETE),
    ("extra", lambda v: 1),
    ("payload.extra", lambda v: "x"),
]


@pytest.mark.parametrize("kind", PAYLOAD_TYPES)
@pytest.mark.parametrize(("path", "change"), RESPELLINGS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(RESPELLINGS)])
def test_a_respelled_envelope_still_fails_after_its_twin_was_decoded(samples, kind, path, change):
    raw = samples[kind]
    genuine = parse_envelope(raw)
    assert genuine.event_id == recomputed(raw)  # the twin's id is cached
    node = raw
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    bad = respell(raw, path, DELETE if change is DELETE else change(node))
    assert bad != raw
    with pytest.raises(MalformedEnvelope):
        parse_envelope(bad)
    assert genuine.event_id == recomputed(raw)
