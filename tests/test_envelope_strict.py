"""One signed event, one byte form, one id (issue 7 point 8).

`ledger.envelope.parse_envelope` is the decoder of the server and of the
offline verifier: a received envelope is accepted only if re-serialising it
gives back exactly its RFC 8785 bytes. Respelled timestamps, numbers as
strings, booleans for numbers, nulls for absent fields, missing defaulted
fields, unknown fields, upper-case hex and over-long integers are MALFORMED,
naming the field; duplicate member names never get that far (loads_strict).
"""

from __future__ import annotations

import copy
import json

import pytest
from nacl.signing import SigningKey
from test_api_graphql import attempt, error_code
from test_ledger_bundle import required_events
from test_ledger_world import base_world

from ledger.bundle import assemble, verify_bundle
from ledger.encoding import StrictJSONError, canonical_json, loads_strict
from ledger.envelope import ENVELOPE_DOMAIN, MalformedEnvelope, parse_envelope, sign, signature_is_valid
from ledger.models import KeyEntry, RevokeKey, RotateKey

PAYLOAD_TYPES = ("register_organization", "rotate_key", "revoke_key", "attest_site", "issue", "transfer",
                 "transform", "publish_claim")  # fmt: skip


def one_of_each() -> dict[str, dict]:
    """The JSON of one accepted envelope of each payload type (from the in-memory ledger world)."""
    found: dict[str, dict] = {}
    for entry in base_world().log:
        found.setdefault(entry.envelope.payload.type, entry.envelope.to_json())
    root = SigningKey.generate()
    registry = [
        RotateKey(org_id="mine-a", new_key=KeyEntry(key_id="k2", public_key="ab" * 32), sealing_key="cd" * 32),
        RevokeKey(org_id="mine-a", key_id="k1", reason="lost laptop"),
    ]
    for payload in registry:
        found.setdefault(payload.type, sign(payload, network="oretrace-test", signer="operator", key_id="root",
                                            signing_key=root).to_json())  # fmt: skip
    return found


@pytest.fixture(scope="module")
def samples() -> dict[str, dict]:
    found = one_of_each()
    assert set(found) == set(PAYLOAD_TYPES)
    return found


@pytest.mark.parametrize("kind", PAYLOAD_TYPES)
def test_accepted_envelopes_round_trip_to_their_bytes(samples, kind):
    raw = samples[kind]
    env = parse_envelope(json.loads(json.dumps(raw)))
    assert canonical_json(env.to_json()) == canonical_json(raw)
    unsigned = {k: v for k, v in raw.items() if k != "signature"}
    assert env.signed_message() == ENVELOPE_DOMAIN + canonical_json(unsigned)


def respell(raw: dict, path: str, value) -> dict:
    out = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


DELETE = object()

#: (payload type, dotted path, new value, field the error must name). Each keeps the
#: value's meaning under a lenient parser, so the old decoder accepted it.
RESPELLINGS = [
    ("issue", "timestamp", lambda v: v.replace("Z", "+00:00"), "timestamp"),
    ("issue", "timestamp", lambda v: v.replace("Z", ".000Z"), "timestamp"),
    ("issue", "timestamp", lambda v: v[:-1], "timestamp"),
    ("transfer", "timestamp", lambda v: v.replace("T", " "), "timestamp"),
    ("attest_site", "payload.valid_from", lambda v: v.replace("Z", "+00:00"), "payload.valid_from"),
    ("attest_site", "payload.valid_until", lambda v: v.replace("Z", "+01:00").replace("T00", "T01"), "payload.valid_until"),
    ("issue", "payload.seq", str, "payload.seq"),
    ("publish_claim", "payload.p", lambda v: str(v), "payload.p"),
    ("publish_claim", "payload.q", lambda v: True if v == 1 else str(v), "payload.q"),
    ("issue", "payload.range_proof", lambda v: v.upper(), "payload.range_proof"),
    ("issue", "payload.commitment", lambda v: v.upper(), "payload.commitment"),
    ("issue", "nonce", lambda v: v.upper(), "nonce"),
    ("revoke_key", "payload.reason", DELETE, "payload.reason"),
    ("publish_claim", "payload.low", lambda v: None, "payload.low"),
    ("transfer", "payload.extra", lambda v: "x", "payload.extra"),
    ("transfer", "extra", lambda v: 1, "extra"),
    ("issue", "payload.seq", lambda v: 2**60, "payload.seq"),
    ("attest_site", "payload.site.location.lat", lambda v: str(v), "payload.site.location.lat"),
]


@pytest.mark.parametrize(("kind", "path", "change", "field"), RESPELLINGS,
                         ids=[f"{k}:{p}:{i}" for i, (k, p, _, _) in enumerate(RESPELLINGS)])  # fmt: skip
def test_respelled_envelopes_are_malformed_naming_the_field(samples, kind, path, change, field):
    raw = samples[kind]
    if change is DELETE:
        bad = respell(raw, path, DELETE)
    else:
        node = raw
        for p in path.split("."):
            node = node.get(p) if isinstance(node, dict) else None
        if kind == "publish_claim" and path.endswith((".low", ".p", ".q")) and node is None:
            bad = respell(raw, path, change(1))  # a field the sample omits: adding it in any spelling changes it
        else:
            bad = respell(raw, path, change(node))
    assert bad != raw
    with pytest.raises(MalformedEnvelope) as caught:
        parse_envelope(bad)
    assert caught.value.field == field, str(caught.value)
    assert str(caught.value).startswith(f"{field}:")


def test_a_respelled_timestamp_keeps_no_signature(samples):
    """The old decoder verified the signature over its own normal form, so a respelled
    timestamp kept a valid signature under a new event id. Now the bytes received are
    the bytes signed: there is nothing else to check a signature against."""
    raw = samples["transfer"]
    bad = respell(raw, "timestamp", raw["timestamp"].replace("Z", "+00:00"))
    with pytest.raises(MalformedEnvelope, match="timestamp"):
        parse_envelope(bad)
    env = parse_envelope(raw)
    public = next(e for e in base_world().log if e.envelope.to_json() == raw)  # the accepted one verifies
    assert public.event_id == env.event_id


@pytest.mark.parametrize(
    "text",
    [
        '{"network": "a", "network": "b"}',
        '{"payload": {"type": "transfer", "type": "issue"}}',
        '{"a": [{"x": 1, "x": 1}]}',
    ],
)
def test_duplicate_member_names_are_refused_before_decoding(text):
    with pytest.raises(StrictJSONError, match="duplicate member name"):
        loads_strict(text)


def test_bundle_with_a_respelled_event_fails_decode(samples):
    w = base_world()
    claim_id = w.names["CLAIM_CLEAN"]
    bundle = assemble(required_events(w, claim_id), claim_id, w.policy.network)
    for i, event in enumerate(bundle["events"]):
        changed = copy.deepcopy(bundle)
        changed["events"][i]["timestamp"] = event["timestamp"].replace("Z", "+00:00")
        report = verify_bundle(changed, w.policy.root_public_key)
        assert not report.ok and report.failed().name == "decode", report.summary
        assert f"event {i}: MALFORMED: timestamp" in report.failed().detail


def test_signature_helper_uses_the_received_bytes(samples):
    env = parse_envelope(samples["issue"])
    unsigned = {k: v for k, v in samples["issue"].items() if k != "signature"}
    assert env.signed_message() == ENVELOPE_DOMAIN + canonical_json(unsigned)
    assert not signature_is_valid(env, "00" * 32)


# --------------------------------------------------------------------------- the server uses the same decoder


async def test_server_refuses_respelled_envelopes_and_writes_nothing(gql, store, world) -> None:
    env = world.register("strict-org", "trader")
    raw = env.to_json()
    for path, value, field in [
        ("timestamp", raw["timestamp"].replace("Z", "+00:00"), "timestamp"),
        ("payload.country", None, "payload.country"),
        ("payload.signing_keys.0.public_key", raw["payload"]["signing_keys"][0]["public_key"].upper(),
         "payload.signing_keys.0.public_key"),
    ]:  # fmt: skip
        before = await store.snapshot()
        body = await attempt(gql, respell(raw, path, value))
        assert error_code(body) == "MALFORMED", body
        assert field in body["errors"][0]["message"], body["errors"][0]["message"]
        assert await store.snapshot() == before
    body = await attempt(gql, raw)
    assert "errors" not in body, body
    assert next(iter(body["data"].values()))["eventId"] == env.event_id
