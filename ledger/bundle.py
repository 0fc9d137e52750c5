"""Disclosure bundles: a claim with everything needed to check it offline.

A bundle is JSON:

    {"format": "oretrace-bundle/v2", "network": ..., "claim_id": ...,
     "lot_ids": [...],                              # the claim's set of lots, strictly ascending
     "events": [<Envelope.to_json()>, ...],         # in ledger order, ending with the claim
     "log": {...}}                                  # optional: transparency-log checkpoint and proofs

Any other top-level member is refused. A v1 bundle (the same layout under
"oretrace-bundle/v1", whose envelopes predate the strict decoder) is refused
with "protocol v1 bundle; use oretrace < 0.2".

Its events must be (the API selects them; `assemble` only packs them):

1. the registry events (register_organization, rotate_key, revoke_key) of
   every organisation involved: the signers of the events below, the
   receivers of their transfers and the operators of their sites
   (`involved_organizations`);
2. every attest_site and revoke_attestation event of every site where an
   ancestry lot (of any lot of the set) was issued, up to the claim (a
   verifier sees corrections);
3. the whole capacity chain of those attestations: every issue event under
   them, seq 0 up to the last one the ancestry relies on, and every issue
   event under a superseded attestation of those sites, whose cumulative
   carries over to its successor (sequence numbers and cumulative
   commitments chain, so a gap fails the replay);
4. every event up to the claim that creates, transfers or consumes an
   ancestry lot: the union of the ancestries of the claimed lots (each lot
   of the set and every lot upstream of it), each event once; except a
   transformation that consumed a claimed lot (a claim may cover lots its
   signer consumed): its outputs are outside the ancestry, its other inputs'
   history is not the claim's, so the replay shows that lot unconsumed;
5. the publish_claim event itself, last.

`verify_bundle` trusts nothing but the root public key. It replays the events
through the same `ledger.rules.apply` the server runs (offline policy: no
clock), into a `MemoryView`, checks that no guard (nonce, consumption,
custody step, issuance step) is used twice, then checks revocation against the
*final* registry (an event dated at or after its key's revocation fails wherever
it stands in the bundle: listing it before the revocation event does not help),
verifies all range and balance proofs of the bundle in one batch
(`ledger.proofs.BatchCollector`: one multi-scalar multiplication, worker
processes on every core), and finally checks that
the named claim was accepted and is about exactly the bundle's `lot_ids`.
The replay itself refuses a bundle that leaves out part of a claimed lot's
ancestry (a lot whose creating event is missing is LOT_NOT_FOUND to the
rules), and the claim's own rule re-checks, from the replayed DAG, that no
lot of the set is upstream of another (OVERLAPPING_LOTS). The report also says what the claim means
(`ClaimMeaning`: ISO 22095 chain-of-custody model, sites, transformers).
A bundle holds commitments, proofs, signatures and sealed ciphertexts: no
amount and no blinding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any

from crypto.batch import WorkerFailed

from . import anchoring
from . import statements as st
from .checkpoint import NoteKey
from .effects import Effects
from .envelope import Envelope, MalformedEnvelope, parse_envelope
from .errors import Rejection
from .models import CLAIM_MODELS, AttestSite, Claim, ClaimKind, PublishClaim, RegisterLogKey, Transfer, timestamp_text
from .proofs import BatchCollector, batch_scope
from .rules import Policy, ancestry, apply
from .view import OPERATOR, MemoryView, apply_effects_to_view

BUNDLE_FORMAT = "oretrace-bundle/v2"
V1_FORMAT = "oretrace-bundle/v1"
V1_REFUSAL = "protocol v1 bundle; use oretrace < 0.2"
#: Top-level members of a v2 bundle; "log" belongs to the transparency log.
_MEMBERS = frozenset({"format", "network", "claim_id", "lot_ids", "events", "log"})


# --------------------------------------------------------------------------- assembling


def involved_organizations(events: Iterable[Envelope]) -> set[str]:
    """Organisations whose registry events a bundle of these events needs."""
    orgs: set[str] = set()
    for env in events:
        orgs.add(env.signer)
        match env.payload:
            case Transfer(to=receiver):
                orgs.add(receiver)
            case AttestSite(site=site):
                orgs.add(site.operator)
    orgs.discard(OPERATOR)  # anchored by the root key, not by a registry event
    return orgs


def assemble(events: list[Envelope], claim_id: str, network: str) -> dict[str, Any]:
    """Pack events (in ledger order) into a bundle for `claim_id`.

    Duplicates are dropped and events after the claim cut off: they cannot
    matter to it, and a later transformation of the claimed lot would pull in
    lots outside its ancestry. Log key registrations (`register_log_key`) are
    kept wherever they are: the bundle's checkpoint may be signed by a key
    registered after the claim (docs/log.md). ValueError if the claim is not
    among the events.
    """
    ordered: list[Envelope] = []
    seen: set[str] = set()
    lot_ids: list[str] | None = None
    for env in events:
        if env.event_id in seen or (lot_ids is not None and not isinstance(env.payload, RegisterLogKey)):
            continue
        seen.add(env.event_id)
        ordered.append(env)
        if isinstance(env.payload, PublishClaim) and st.claim_id(env.network, env.signer, env.nonce) == claim_id:
            lot_ids = list(env.payload.lot_ids)
    if lot_ids is None:
        raise ValueError(f"claim {claim_id} is not among the {len(ordered)} events given")
    return {
        "format": BUNDLE_FORMAT,
        "network": network,
        "claim_id": claim_id,
        "lot_ids": lot_ids,
        "events": [e.to_json() for e in ordered],
    }


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerificationReport:
    ok: bool
    claim: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    events: int = 0
    range_proofs: int = 0
    sigma_proofs: int = 0
    summary: str = ""
    meaning: dict[str, Any] = field(default_factory=dict)
    anchor: dict[str, Any] | None = None  # the checkpoint the events are anchored in (ledger.anchoring)

    def failed(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Failed(Exception):
    def __init__(self, name: str, detail: str):
        self.check = Check(name, False, detail)


def verify_bundle(
    bundle: Any,
    root_public_key_hex: str,
    *,
    network: str | None = None,
    require_log: bool = False,
    witnesses: tuple[NoteKey, ...] = (),
    min_cosignatures: int = 0,
) -> VerificationReport:
    """Check a disclosure bundle offline against the root key. Never raises: failures are in the report.

    A `log` member is always checked when present (`ledger.anchoring`): the
    checkpoint against a log key registered under the root key, every event's
    inclusion, and the quorum of `witnesses` (cosignature/v1 keys) when
    `min_cosignatures` > 0. Without a `log` member the bundle fails if
    `require_log`, `witnesses` or `min_cosignatures` ask for one.

    `network`, if given, is the network the verifier expects: a bundle naming any
    other one fails the `format` check. Without it the bundle's own `network`
    field is trusted, so one root key used for several networks (say a test and a
    production network) would let a test-network bundle verify; pin it whenever
    the root key is not unique to one network.

    A worker process that dies, hangs or cannot be started during the verification (`crypto.batch.WorkerFailed`:
    a hung worker is killed after its time limit, `crypto.batch.WORKER_WAIT_BASE_S`) is not
    held against the bundle: it is verified again in this process alone, and the "proofs"
    check says so (or, if the bundle failed before its proofs were checked, the failed check).
    """
    args = (network, require_log, witnesses, min_cosignatures)
    report = VerificationReport(ok=False, claim={})
    fallback = None  # why the bundle was verified again in this process alone, if it was
    try:
        try:
            with batch_scope():  # every point decoded once, proof points in worker processes
                _verify(bundle, root_public_key_hex, report, *args)
        except WorkerFailed as worker:  # a worker process died (killed, out of memory) or hung: not
            fallback = worker  # the bundle's fault; verify it again, all here
            report = VerificationReport(ok=False, claim={})
            with batch_scope(workers=0):
                _verify(bundle, root_public_key_hex, report, *args)
        report.ok = True
    except _Failed as failure:
        report.checks.append(failure.check)
    except Exception as exc:  # fail closed on anything unforeseen in hostile input
        report.checks.append(Check("internal", False, f"verification aborted: {type(exc).__name__}: {exc}"))
    if fallback is not None and report.checks:  # said whatever the verdict: on "proofs", else the failed check
        noted = next((c for c in report.checks if c.name == "proofs"), report.checks[-1])
        report.checks = [
            replace(c, detail=f"{c.detail} (in this process alone: {fallback})") if c is noted else c
            for c in report.checks
        ]
    report.summary = _summary(report)
    return report


def _verify(
    bundle: Any,
    root_public_key_hex: str,
    report: VerificationReport,
    expected_network: str | None,
    require_log: bool,
    witnesses: tuple[NoteKey, ...],
    min_cosignatures: int,
) -> None:
    network, claim_id, lot_ids, raw_events = _read_format(bundle)
    if expected_network is not None and network != expected_network:
        raise _Failed("format", f"network: the bundle is for {network!r}, the verifier expects {expected_network!r}")
    report.claim = {"claim_id": claim_id, "lot_ids": lot_ids}
    report.checks.append(Check("format", True, f"{BUNDLE_FORMAT} on network {network}"))

    # Each event is decoded just before it is replayed (not all of them first), so
    # that its proof points reach the worker processes at once: they decode them
    # while this process goes on with the next events (docs/performance.md).
    envelopes: list[Envelope] = []
    view = MemoryView()
    proofs = BatchCollector()
    policy = Policy(network=network, root_public_key=root_public_key_hex)
    first_use: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(raw_events):
        try:
            env = parse_envelope(raw)
        except MalformedEnvelope as exc:
            raise _Failed("decode", f"event {i}: MALFORMED: {exc}") from None
        envelopes.append(env)
        label = f"event {i} ({env.payload.type} {env.event_id})"
        proofs.scope = f"{label}: "
        try:
            effects = apply(env, view, policy, proofs)
        except Rejection as rejection:
            raise _Failed("rules", f"{label}: {rejection.code.value}: {rejection.message}") from None
        for namespace, key_text, reason in unique_keys(effects):
            key = (namespace, key_text)
            if key in first_use:
                raise _Failed(
                    "uniqueness",
                    f"{label}: {reason} ({namespace} {key_text}, first by event {first_use[key]})",
                )
            first_use[key] = i
        apply_effects_to_view(view, effects)
    report.events = len(envelopes)
    report.checks.append(Check("decode", True, f"{len(envelopes)} signed envelopes"))
    report.range_proofs, report.sigma_proofs = proofs.range_proofs, proofs.sigma_proofs
    report.checks.append(
        Check("rules", True, "every event is signed by a registered key and obeys the ledger rules")
    )
    report.checks.append(Check("uniqueness", True, "no nonce reused, no lot consumed, transferred or issued twice"))
    _check_revocations(envelopes, view)
    report.checks.append(
        Check("revocation", True, "no event is dated at or after the revocation of its signing key")
    )

    try:
        proofs.verify()
    except Rejection as rejection:
        raise _Failed("proofs", rejection.message) from None
    report.checks.append(
        Check(
            "proofs",
            True,
            f"{proofs.range_proofs} range proofs and {proofs.sigma_proofs} balance proofs verified"
            " in one multi-scalar multiplication",
        )
    )

    if "log" in bundle:
        try:
            anchor = anchoring.verify_anchoring(
                envelopes, bundle["log"], witnesses=witnesses, min_cosignatures=min_cosignatures
            )
        except anchoring.AnchoringError as exc:
            raise _Failed("log", str(exc)) from None
        report.anchor = anchor.to_json()
        report.checks.append(Check("log", True, f"every event is a leaf of {anchor.describe()}"))
    elif require_log or witnesses or min_cosignatures:
        raise _Failed("log", "the bundle is not anchored in the log (no 'log' member)")

    claim = view.claims.get(claim_id)
    if claim is None:
        raise _Failed("claim", f"claim {claim_id} is not published by any event of the bundle")
    if claim.lot_ids != lot_ids:
        raise _Failed(
            "claim", f"claim {claim_id} is about {describe_lots(claim.lot_ids)}, the bundle names {describe_lots(lot_ids)}"
        )
    owner = view.organization(claim.owner)
    report.claim = _claim_summary(claim, owner.name if owner else claim.owner)
    report.meaning = claim_meaning(claim, view)
    report.checks.append(Check("claim", True, f"{report.claim['statement']} holds {report.claim['scope']}"))


def _check_revocations(envelopes: list[Envelope], view: MemoryView) -> None:
    """Against the registry as it stands after the whole replay: an event signed by a
    key and dated at or after that key's revocation fails, wherever the bundle lists it
    (the replay alone only catches events listed after the revocation)."""
    for i, env in enumerate(envelopes):
        if env.signer == OPERATOR:
            continue
        org = view.organization(env.signer)
        key = next((k for k in org.signing_keys if k.key_id == env.key_id), None) if org else None
        if key is not None and key.revoked_at is not None and env.timestamp >= key.revoked_at:
            raise _Failed(
                "revocation",
                f"event {i} ({env.payload.type} {env.event_id}): REVOKED_KEY: signed by key {env.key_id!r} of"
                f" {env.signer} on {timestamp_text(env.timestamp)}, at or after its revocation on"
                f" {timestamp_text(key.revoked_at)}",
            )


# --------------------------------------------------------------------------- what a claim means

#: ISO 22095:2020 chain-of-custody models, as named in the report.
IDENTITY_PRESERVED = "identity preserved"
SEGREGATION = "segregation"
MASS_BALANCE = "mass balance"


def claim_meaning(claim: Claim, view: MemoryView) -> dict[str, Any]:
    """What a verified claim rests on, for the report (a JSON-ready dict):

    * `model`: the ISO 22095 chain-of-custody model (docs/ledger.md section 5):
      "mass balance" for share claims (the per-class amounts of a mixed lot are a
      book allocation made by each transformer under the balance proofs, not its
      physical content); for ancestry claims "identity preserved" when every
      issued ancestor comes from a single site, otherwise "segregation"; none for
      amount claims (a quantity statement);
    * `identity_preserved`: every issued ancestor comes from a single site;
    * `wording`: how to read the statement ("book share (mass balance)" for shares);
    * `sites`: every site where an ancestor was issued: site_id, name, country,
      region, origin_class, operator, operator_name;
    * `transformers`: every organisation that transformed material upstream
      (org_id, name, country): the refiners etc. an OEM lists in due diligence;
    * `lots`: the claimed set, each {lot_id, product};
    * `mass_balance`: what the aggregate sums over, {lots (the set's size),
      upstream_lots, issued_lots, transformations (balanced, loss-capped
      transformation events upstream), origin_classes (of the issued ancestors)}.
    Every figure comes from the replayed DAG of the whole set (each lot once).
    """
    lots = ancestry(view, claim.lot_ids)
    sites: dict[str, dict[str, Any]] = {}
    transformers: dict[str, dict[str, Any]] = {}
    for lot in lots:
        if lot.site_id is not None:
            site = view.site(lot.site_id)
            if site is not None and site.site_id not in sites:
                operator = view.organization(site.operator)
                sites[site.site_id] = {
                    "site_id": site.site_id, "name": site.name, "country": site.country, "region": site.region,
                    "origin_class": site.origin_class, "operator": site.operator,
                    "operator_name": operator.name if operator else site.operator,
                }  # fmt: skip
        elif lot.parents and lot.issuer not in transformers:
            org = view.organization(lot.issuer)
            transformers[lot.issuer] = {
                "org_id": lot.issuer,
                "name": org.name if org else lot.issuer,
                "country": org.country if org else "",
            }
    identity_preserved = len(sites) == 1
    single = len(claim.lot_ids) == 1
    booked = "this lot" if single else f"these {len(claim.lot_ids)} lots together"
    model = CLAIM_MODELS[claim.kind]
    if model == MASS_BALANCE:
        wording = (
            f"book share (mass balance): of the contained cobalt booked to {booked}, the {claim.origin_class} share"
            " is as stated; it is an allocation under the balance and loss-cap proofs, not the physical content"
            f" of {'the lot' if single else 'each lot'}"
        )
    elif claim.kind is ClaimKind.amount_in_range:
        what = "this one lot" if single else f"the sum over these {len(claim.lot_ids)} lots"
        wording = f"a quantity statement about {what} (contained cobalt, in grams), not about its origin"
    else:
        model = IDENTITY_PRESERVED if identity_preserved else SEGREGATION
        wording = (
            f"the material of {booked} comes from the single site below and was never mixed with other material"
            if identity_preserved
            else f"no {claim.origin_class} material entered the recorded ancestry of {booked} at any step"
        )
    claimed = [lot for lot in lots if lot.lot_id in claim.lot_ids]
    return {
        "model": model,
        "identity_preserved": identity_preserved,
        "wording": wording,
        "sites": sorted(sites.values(), key=lambda s: s["site_id"]),
        "transformers": sorted(transformers.values(), key=lambda t: t["org_id"]),
        "lots": [
            {"lot_id": lot.lot_id, "product": lot.product} for lot in sorted(claimed, key=lambda lot: lot.lot_id)
        ],
        "mass_balance": {
            "lots": len(claimed),
            "upstream_lots": len(lots) - len(claimed),
            "issued_lots": sum(lot.site_id is not None for lot in lots),
            "transformations": len({lot.created_by_event for lot in lots if lot.parents}),
            "origin_classes": sorted({lot.origin_class for lot in lots if lot.origin_class is not None}),
        },
    }


def unique_keys(effects: Effects) -> list[tuple[str, str, str]]:
    """The keys an event must be the first to use within a bundle: its guards, and
    the ids of the records it creates.

    The server gets the second half from its unique `_id`s (a second lot, attestation
    or claim with an existing id fails to insert). A replay into a `MemoryView` would
    instead silently *overwrite* the first record, e.g. replace an artisanal lot by a
    clean one under the same id and so launder every descendant's ancestry. Ids are
    96-bit truncated hashes of (network, signer, nonce, index): a publisher can grind a
    collision between two of its own nonces with about 2^48 hashes.
    """
    keys = [(g.namespace, g.key, g.reason) for g in effects.guards]
    keys += [("lot", lot.lot_id, "lot id already created") for lot in effects.new_lots]
    keys += [("attestation", a.attestation_id, "attestation id already created") for a in effects.attestations]
    keys += [("claim", c.claim_id, "claim id already created") for c in effects.claims]
    return keys


def _read_format(bundle: Any) -> tuple[str, str, str, list[Any]]:
    if not isinstance(bundle, dict):
        raise _Failed("format", "a bundle is a JSON object")
    if bundle.get("format") == V1_FORMAT:
        raise _Failed("format", V1_REFUSAL)
    if bundle.get("format") != BUNDLE_FORMAT:
        raise _Failed("format", f"format is {bundle.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    for name in ("network", "claim_id"):
        if not isinstance(bundle.get(name), str):
            raise _Failed("format", f"{name}: must be a string")
    unknown = sorted(set(bundle) - _MEMBERS)
    if unknown:
        raise _Failed("format", f"unknown member(s) {', '.join(map(repr, unknown))}")
    lot_ids = bundle.get("lot_ids")
    if not isinstance(lot_ids, list) or not lot_ids or not all(isinstance(x, str) for x in lot_ids):
        raise _Failed("format", "lot_ids: must be a non-empty list of lot ids")
    events = bundle.get("events")
    if not isinstance(events, list) or not events:
        raise _Failed("format", "events: must be a non-empty list")
    return bundle["network"], bundle["claim_id"], lot_ids, events


#: The most decimals a percentage in a claim's words is written with.
PERCENT_DECIMALS = 2


def percentages(q: int, *bounds: tuple[int, str]) -> str:
    """Each bound (numerator p, "down" or "up") as the percentage p/q, all with the same
    number of decimals: the fewest (at most PERCENT_DECIMALS) that write every one of
    them exactly, e.g. q = 1000, (160, "down"), (169, "up") -> "16.0-16.9%"; 1/8 ->
    "12.5%". When even PERCENT_DECIMALS cannot, each is rounded in its direction and
    the text marked "~", so that it still states a true, weaker bound: a lower bound of
    1/3 reads "~33.33%" (down), an upper bound of 2/3 "~66.67%" (up). The exact
    fractions stand beside them in every statement; this is a reading aid."""
    hundredths = [(Fraction(100 * p, q), direction) for p, direction in bounds]
    exact = next(
        (d for d in range(PERCENT_DECIMALS + 1) if all((h * 10**d).denominator == 1 for h, _ in hundredths)), None
    )
    decimals = PERCENT_DECIMALS if exact is None else exact
    scale = 10**decimals
    texts = []
    for h, direction in hundredths:
        units = math.floor(h * scale) if direction == "down" else math.ceil(h * scale)
        whole, part = divmod(units, scale)
        texts.append(f"{whole}.{part:0{decimals}d}" if decimals else str(whole))
    return f"{'~' if exact is None else ''}{'-'.join(texts)}%"


def describe_claim(claim: Claim) -> str:
    """The claim in words, e.g. "recycled share >= 16/100 (16%)", "recycled share between
    160/1000 and 169/1000 (16.0-16.9%)" (`percentages`)."""
    match claim.kind:
        case ClaimKind.ancestry_excludes:
            return f"no {claim.origin_class} origin anywhere upstream"
        case ClaimKind.share_at_most | ClaimKind.share_at_least:
            op, direction = ("<=", "up") if claim.kind is ClaimKind.share_at_most else (">=", "down")
            return f"{claim.origin_class} share {op} {claim.p}/{claim.q} ({percentages(claim.q, (claim.p, direction))})"
        case ClaimKind.share_in_range:
            bounds = f"{claim.p}/{claim.q} and {claim.p_max}/{claim.q}"
            return f"{claim.origin_class} share between {bounds} ({percentages(claim.q, (claim.p, 'down'), (claim.p_max, 'up'))})"
        case ClaimKind.amount_in_range:
            return f"contained cobalt between {claim.low} g and {claim.high} g"
    raise AssertionError(claim.kind)


def describe_lots(lot_ids: list[str]) -> str:
    """"lot A" for one lot, "3 lots: A, B, C" for a set (the claim's scope in words)."""
    return f"lot {lot_ids[0]}" if len(lot_ids) == 1 else f"{len(lot_ids)} lots: {', '.join(lot_ids)}"


def _claim_summary(claim: Claim, owner_name: str) -> dict[str, Any]:
    """The claim record as JSON, plus `owner_name`, `statement` (describe_claim) and
    `scope` ("for lot A" / "for 3 lots: A, B, C")."""
    return {
        **claim.model_dump(mode="json", exclude_none=True),
        "owner_name": owner_name,
        "statement": describe_claim(claim),
        "scope": f"for {describe_lots(claim.lot_ids)}",
    }


def _summary(report: VerificationReport) -> str:
    failed = report.failed()
    if failed is not None:
        return f"INVALID: {failed.name}: {failed.detail}"
    c = report.claim
    anchored = (
        f"; anchored in checkpoint {report.anchor['origin']} size {report.anchor['size']}"
        if report.anchor
        else "; NOT anchored in the log"
    )
    return (
        f"VALID: {c['statement']}, claimed by {c['owner_name']} {c['scope']} ({c['claim_id']}); "
        f"{report.events} events replayed, {report.range_proofs} range proofs batched, "
        f"{report.sigma_proofs} balance proofs{anchored}"
    )
