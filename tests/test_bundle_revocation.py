"""Offline revocation (issue 7 point 7): after the replay, every event dated at or
after its key's revocation fails, wherever the bundle lists it.

A revoke_key event (operator-signed, genuine) dated before some event of the
revoked key is put into an otherwise valid bundle at every position: before
the event (the replay refuses it: check "rules"), after it, and last (the old
verifier accepted both). Revocations dated after every event of the key leave
the bundle valid."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_ledger_bundle import required_events
from test_ledger_world import base_world

from ledger.bundle import assemble, verify_bundle
from ledger.envelope import parse_envelope
from ledger.models import RevokeKey
from ledger.view import OPERATOR


@pytest.fixture(scope="module")
def setting():
    w = base_world().fork()
    claim_id = w.names["CLAIM_CLEAN"]
    bundle = assemble(required_events(w, claim_id), claim_id, w.policy.network)
    return w, bundle


def revocation(w, org_id: str, at):
    key_id = w.orgs[org_id].key_id
    return w.sign(RevokeKey(org_id=org_id, key_id=key_id, reason="compromised"), OPERATOR, timestamp=at).to_json()


def signed_by(bundle: dict, org_id: str) -> list[int]:
    return [i for i, e in enumerate(bundle["events"]) if e["signer"] == org_id]


@pytest.mark.parametrize("org_id", ["oem", "refiner", "mine-a"])
def test_event_at_or_after_revocation_fails_wherever_listed(setting, org_id):
    w, bundle = setting
    mine = signed_by(bundle, org_id)
    assert mine, org_id
    last = parse_envelope(bundle["events"][mine[-1]])
    for at in (last.timestamp, last.timestamp - timedelta(seconds=1)):  # "at or after"
        revoke = revocation(w, org_id, at)
        for position in sorted({mine[-1], mine[-1] + 1, len(bundle["events"]) - 1, len(bundle["events"])}):
            events = list(bundle["events"])
            events.insert(position, revoke)
            report = verify_bundle({**bundle, "events": events}, w.policy.root_public_key)
            assert not report.ok, (org_id, position)
            failure = report.failed()
            assert failure.name in {"rules", "revocation"}, report.summary
            assert "REVOKED_KEY" in failure.detail, failure.detail
            if position > mine[-1]:  # listed before its revocation: only the final check catches it
                assert failure.name == "revocation"


def test_revocation_after_every_event_of_the_key_keeps_the_bundle_valid(setting):
    w, bundle = setting
    for org_id in ("oem", "refiner"):
        last = parse_envelope(bundle["events"][signed_by(bundle, org_id)[-1]])
        events = [*bundle["events"], revocation(w, org_id, last.timestamp + timedelta(seconds=1))]
        report = verify_bundle({**bundle, "events": events}, w.policy.root_public_key)
        assert report.ok, report.summary


@pytest.mark.parametrize("org_id", ["oem", "refiner", "mine-a"])
def test_event_listed_after_the_revocation_fails_whatever_its_date(setting, org_id):
    """A revoked key publishes nothing more: an event dated before the revocation but
    listed after it (in ledger order it arrived after, back-dated within the clock skew)
    fails the replay, wherever the revocation stands before it."""
    w, bundle = setting
    mine = signed_by(bundle, org_id)
    last = parse_envelope(bundle["events"][mine[-1]])
    revoke = revocation(w, org_id, last.timestamp + timedelta(seconds=1))  # dated after every event of the key
    registered = next(i for i, e in enumerate(bundle["events"])
                      if e["payload"]["type"] == "register_organization" and e["payload"]["org_id"] == org_id)  # fmt: skip
    for position in range(registered + 1, mine[-1] + 1):  # listed before (at least) the key's last event
        events = list(bundle["events"])
        events.insert(position, revoke)
        report = verify_bundle({**bundle, "events": events}, w.policy.root_public_key)
        assert not report.ok, (org_id, position)
        assert report.failed().name == "rules" and "REVOKED_KEY" in report.failed().detail, report.summary
