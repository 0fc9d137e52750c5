"""Generate the ledger-level test vectors: envelopes, transcript challenges, a bundle.

    .venv/bin/python tests/vectors/make_ledger_vectors.py          # (re)write the files
    .venv/bin/python tests/vectors/make_ledger_vectors.py --check  # check the stored files, write nothing

Files (all in tests/vectors/):

* `envelopes.json`: one signed envelope of every payload type, with the
  signer's public key, the exact signed bytes (hex: the domain tag
  "oretrace/envelope/v1\\n" then RFC 8785 of the envelope without
  "signature"), the event id, and the ids the event derives
  (`derive_id`: lots, attestation, claim).
* `transcripts.json`: for one proof of each kind the rules verify (issuance
  range, capacity, transformation balance, transformation range, share claim,
  amount claim): the event, statement label, context (UTF-8) and every
  challenge the verifier derives, in order (label, scalar as 64 hex).
* `bundle.json`: a small complete disclosure bundle, its root public key and
  the expected `verify_bundle` report.

Keys, nonces, timestamps, blindings and proof nonces are deterministic;
sealed boxes are not (libsodium draws the ephemeral key), so regenerating
changes every signature and id. `--check` (and tests/test_ledger_vectors.py)
therefore check the stored files semantically: every envelope decodes strictly
and re-serialises to its signed bytes, every signature, id and challenge is
recomputed, and the bundle's report is reproduced.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "tests" / "vectors") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "vectors"))

from nacl.public import PrivateKey  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from crypto.pedersen import Opening  # noqa: E402
from crypto.transcript import Transcript  # noqa: E402
from ledger import statements as st  # noqa: E402
from ledger.builders import PlannedOutput, build_attestation, build_claim, build_issue, build_transfer, build_transform  # noqa: E402
from ledger.bundle import assemble, verify_bundle  # noqa: E402
from ledger.encoding import canonical_json  # noqa: E402
from ledger.envelope import ENVELOPE_DOMAIN, Envelope, parse_envelope, sign, signature_is_valid  # noqa: E402
from ledger.models import (  # noqa: E402
    KeyEntry,
    Location,
    Payload,
    RegisterLogKey,
    RegisterOrganization,
    RevokeAttestation,
    RevokeKey,
    Role,
    RotateKey,
    SiteInfo,
)
from ledger.proofs import VerifyNow  # noqa: E402
from ledger.rules import Policy, apply  # noqa: E402
from ledger.view import OPERATOR, MemoryView, apply_effects_to_view  # noqa: E402
from make_vectors import blinding, deterministic_rng  # noqa: E402

HERE = Path(__file__).resolve().parent
NETWORK = "oretrace-vectors"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"oretrace/test-vectors/key/" + label.encode()).digest()


def _nonce(label: str) -> str:
    return hashlib.sha256(b"oretrace/test-vectors/nonce/" + label.encode()).hexdigest()[:32]


@contextlib.contextmanager
def recording_transcripts() -> Iterator[list[dict[str, Any]]]:
    """Record every Transcript made (statement, context) and each challenge it gives; a
    clone (verifiers clone a transcript per proof) records its challenges on its own."""
    log: list[dict[str, Any]] = []
    by_id: dict[int, dict[str, Any]] = {}
    init, challenge, clone = Transcript.__init__, Transcript.challenge_scalar, Transcript.clone

    def recorded_init(self, statement: bytes, context: bytes) -> None:
        init(self, statement, context)
        entry = {"statement": statement.decode(), "context": context.decode(), "challenges": []}
        by_id[id(self)] = entry
        log.append(entry)

    def recorded_challenge(self, label: bytes) -> int:
        c = challenge(self, label)
        if id(self) in by_id:
            by_id[id(self)]["challenges"].append({"label": label.decode(), "scalar": c.to_bytes(32, "big").hex()})
        return c

    def recorded_clone(self) -> Transcript:
        twin = clone(self)
        if id(self) in by_id:
            entry = {**by_id[id(self)], "challenges": list(by_id[id(self)]["challenges"])}
            by_id[id(twin)] = entry
            log.append(entry)
        return twin

    saved = (init, challenge, clone)
    Transcript.__init__, Transcript.challenge_scalar, Transcript.clone = recorded_init, recorded_challenge, recorded_clone  # type: ignore[method-assign]
    try:
        yield log
    finally:
        Transcript.__init__, Transcript.challenge_scalar, Transcript.clone = saved  # type: ignore[method-assign]


class _Org:
    def __init__(self, org_id: str, roles: list[str]):
        self.org_id, self.roles = org_id, roles
        self.signing = SigningKey(_seed(org_id + "/signing"))
        self.sealing = PrivateKey(_seed(org_id + "/sealing"))

    @property
    def sealing_public(self) -> str:
        return bytes(self.sealing.public_key).hex()


def build() -> tuple[dict, dict, dict]:
    root = SigningKey(_seed("root"))
    root_hex = root.verify_key.encode().hex()
    policy = Policy(network=NETWORK, root_public_key=root_hex)
    view = MemoryView()
    orgs = {o.org_id: o for o in (_Org("auditor", ["auditor"]), _Org("mine", ["mine"]),
                                   _Org("refiner", ["refiner"]), _Org("trader", ["trader"]))}  # fmt: skip
    clock = [T0]
    events: list[tuple[str, Envelope, list[dict]]] = []

    def publish(label: str, payload, signer: str) -> Envelope:
        clock[0] += timedelta(minutes=1)
        key = root if signer == OPERATOR else orgs[signer].signing
        key_id = "root" if signer == OPERATOR else "k1"
        env = sign(payload, network=NETWORK, signer=signer, key_id=key_id, signing_key=key,
                   nonce=_nonce(label), timestamp=clock[0])  # fmt: skip
        with recording_transcripts() as log:
            effects = apply(env, view, policy, VerifyNow())
        apply_effects_to_view(view, effects)
        events.append((label, env, [t for t in log if t["challenges"]]))
        return env

    for o in orgs.values():
        publish(f"register {o.org_id}", RegisterOrganization(
            org_id=o.org_id, name=o.org_id.title(), country="CD", roles=[Role(r) for r in o.roles],
            signing_keys=[KeyEntry(key_id="k1", public_key=o.signing.verify_key.encode().hex())],
            sealing_key=o.sealing_public), OPERATOR)  # fmt: skip
    site = SiteInfo(site_id="site-1", operator="mine", name="Vector pit", country="CD", region="Lualaba",
                    location=Location(lat=-10.5, lon=25.75), origin_class="industrial")  # fmt: skip
    capacity = Opening(10**9, blinding("capacity"))
    with deterministic_rng("attest"):
        att_payload = build_attestation(network=NETWORK, signer="auditor", nonce=_nonce("attest"), site=site,
                                        valid_from=datetime(2026, 1, 1, tzinfo=UTC),
                                        valid_until=datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
                                        capacity=capacity, operator_sealing_key=orgs["mine"].sealing_public)  # fmt: skip
    att_env = publish("attest", att_payload, "auditor")
    att_id = st.attestation_id(NETWORK, "auditor", att_env.nonce)
    issued = Opening.zero()
    lots: list[tuple[str, Opening]] = []
    for seq, grams in enumerate((700_000, 300_000)):
        opening = Opening(grams, blinding(f"issue {seq}"))
        with deterministic_rng(f"issue {seq}"):
            payload = build_issue(network=NETWORK, signer="mine", nonce=_nonce(f"issue {seq}"), site_id="site-1",
                                  origin_class="industrial", attestation_id=att_id, seq=seq, opening=opening,
                                  issued_before=issued, capacity=capacity, product="cobalt hydroxide",
                                  owner_sealing_key=orgs["mine"].sealing_public)  # fmt: skip
        env = publish(f"issue {seq}", payload, "mine")
        lots.append((st.issued_lot_id(NETWORK, "mine", env.nonce), opening))
        issued = issued + opening
    lot_a, open_a = lots[0]
    publish("transfer", build_transfer(lot_id=lot_a, to="refiner", openings={"industrial": open_a},
                                       receiver_sealing_key=orgs["refiner"].sealing_public), "mine")  # fmt: skip
    outs = [Opening(400_000, blinding("output")), Opening(250_000, blinding("output 1"))]
    with deterministic_rng("transform"):
        payload = build_transform(network=NETWORK, signer="refiner", nonce=_nonce("transform"), process="refine",
                                  inputs={lot_a: {"industrial": open_a}},
                                  outputs=[PlannedOutput("cobalt sulfate", {"industrial": o}) for o in outs],
                                  owner_sealing_key=orgs["refiner"].sealing_public)  # fmt: skip
    env = publish("transform", payload, "refiner")
    refined = st.output_lot_ids(NETWORK, "refiner", env.nonce, 2)
    openings = {lot: {"industrial": o} for lot, o in zip(refined, outs, strict=True)}
    claims = {}
    # the amount claim is an aggregate over both outputs (650 000 g), the share claim is about the first
    for label, lot_ids, params in (
        ("claim amount", refined, {"kind": "amount_in_range", "low": 600_000, "high": 700_000}),
        ("claim share", refined[:1], {"kind": "share_at_least", "origin_class": "industrial", "p": 1, "q": 1}),
    ):
        with deterministic_rng(label):
            payload = build_claim(network=NETWORK, signer="refiner", nonce=_nonce(label), lot_ids=lot_ids,
                                  openings={i: openings[i] for i in lot_ids}, **params)  # fmt: skip
        env = publish(label, payload, "refiner")
        claims[label] = st.claim_id(NETWORK, "refiner", env.nonce)
    publish("revoke attestation", RevokeAttestation(site_id="site-1", attestation_id=att_id, reason="vector"),
            "auditor")  # fmt: skip
    publish("rotate", RotateKey(org_id="trader", new_key=KeyEntry(key_id="k2", public_key=SigningKey(
        _seed("trader/k2")).verify_key.encode().hex())), OPERATOR)  # fmt: skip
    publish("revoke", RevokeKey(org_id="trader", key_id="k1", reason="vector"), OPERATOR)
    publish("register log key", RegisterLogKey(origin="vectors.oretrace.example/log", public_key=SigningKey(
        _seed("log")).verify_key.encode().hex()), OPERATOR)  # fmt: skip

    envelopes = {"description": __doc__.split("Files")[0].strip(), "network": NETWORK, "root_public_key": root_hex,
                 "cases": []}  # fmt: skip
    seen: set[str] = set()
    for label, env, _ in events:
        if env.payload.type in seen:
            continue
        seen.add(env.payload.type)
        raw = env.to_json()
        unsigned = {k: v for k, v in raw.items() if k != "signature"}
        signer_key = root_hex if env.signer == OPERATOR else orgs[env.signer].signing.verify_key.encode().hex()
        envelopes["cases"].append({
            "label": label, "type": env.payload.type, "signer_public_key": signer_key, "envelope": raw,
            "signed_bytes_hex": (ENVELOPE_DOMAIN + canonical_json(unsigned)).hex(),
            "canonical_envelope_sha256": hashlib.sha256(canonical_json(raw)).hexdigest(),
            "event_id": env.event_id, "derived_ids": derived_ids(env),
        })  # fmt: skip
    transcripts = {"description": "Every transcript a verifier builds for one proof of each kind, with its challenges.",
                   "cases": []}  # fmt: skip
    wanted = {"issue 1", "transform", "claim amount", "claim share"}
    for label, env, log in events:
        if label in wanted:
            transcripts["cases"].append({"event_label": label, "event_id": env.event_id, "transcripts": log})
    # the bundle is unanchored (no log): it leaves the log key registration out
    bundle = assemble([e for _, e, _ in events if e.payload.type != "register_log_key"], claims["claim share"], NETWORK)
    report = verify_bundle(bundle, root_hex).to_json()
    return envelopes, transcripts, {"root_public_key": root_hex, "bundle": bundle, "expected_report": report}


def derived_ids(env: Envelope) -> dict[str, Any]:
    p = env.payload
    match p.type:
        case "attest_site":
            return {"attestation_id": st.attestation_id(env.network, env.signer, env.nonce)}
        case "issue":
            return {"lot_ids": [st.issued_lot_id(env.network, env.signer, env.nonce)]}
        case "transform":
            return {"lot_ids": st.output_lot_ids(env.network, env.signer, env.nonce, len(p.outputs))}
        case "publish_claim":
            return {"claim_id": st.claim_id(env.network, env.signer, env.nonce)}
    return {}


# --------------------------------------------------------------------------- checking


def check(envelopes: dict, transcripts: dict, bundle: dict) -> list[str]:
    """Problems found in the stored vectors ([] if none), recomputing everything."""
    problems: list[str] = []
    by_id: dict[str, Envelope] = {}
    for case in envelopes["cases"]:
        env = parse_envelope(case["envelope"])
        by_id[env.event_id] = env
        unsigned = {k: v for k, v in case["envelope"].items() if k != "signature"}
        if (ENVELOPE_DOMAIN + canonical_json(unsigned)).hex() != case["signed_bytes_hex"]:
            problems.append(f"{case['label']}: signed bytes differ")
        if env.signed_message().hex() != case["signed_bytes_hex"]:
            problems.append(f"{case['label']}: re-serialised signed bytes differ")
        if env.event_id != case["event_id"] or "evt_" + case["canonical_envelope_sha256"][:32] != case["event_id"]:
            problems.append(f"{case['label']}: event id differs")
        if not signature_is_valid(env, case["signer_public_key"]):
            problems.append(f"{case['label']}: signature does not verify")
        if derived_ids(env) != case["derived_ids"]:
            problems.append(f"{case['label']}: derived ids differ")
    every_type = {model.model_fields["type"].default for model in get_args(get_args(Payload)[0])}
    if {c["type"] for c in envelopes["cases"]} != every_type:
        problems.append("envelopes: not every payload type is present")
    # transcripts: what the verifier derives while it verifies the bundle (range proofs in one batch)
    with recording_transcripts() as log:
        report = verify_bundle(bundle["bundle"], bundle["root_public_key"]).to_json()
    # a batch derives one more challenge ("batch-binding") after a proof's own: compare the prefix
    derived = [(t["statement"], t["context"], t["challenges"]) for t in log if t["challenges"]]
    for case in transcripts["cases"]:
        for t in case["transcripts"]:
            n = len(t["challenges"])
            if not n or not any((s, c, d[:n]) == (t["statement"], t["context"], t["challenges"]) for s, c, d in derived):
                problems.append(f"transcripts of {case['event_label']}: {t['statement']}: recomputed challenges differ")
    if report != bundle["expected_report"]:
        problems.append("bundle: the report differs from the expected one")
    return problems


FILES = ("envelopes.json", "transcripts.json", "bundle.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the stored files; write nothing")
    args = parser.parse_args()
    if args.check:
        stored = [json.loads((HERE / name).read_text()) for name in FILES]
        problems = check(*stored)
        for p in problems:
            print(p)
        return 1 if problems else 0
    for name, data in zip(FILES, build(), strict=True):
        (HERE / name).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print("wrote", HERE / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
