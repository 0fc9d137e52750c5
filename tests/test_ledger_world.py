"""A small supply chain built in memory through the real rules (shared by the ledger tests).

operator registers: an auditor, two mines (site-a industrial, site-b
artisanal), a recycler (site-r), a refiner and an OEM. The auditor attests the
three sites; the mines and the recycler issue lots; the refiner refines
industrial + recycled lots into CLEAN (sold to the OEM, which claims "no
artisanal origin" and "recycled share >= 16 %") and the artisanal lot into
DIRTY. Every publication goes through builders -> sign -> apply -> view,
exactly as the SDK and the server do it. No database.
"""

from __future__ import annotations

import copy
import functools
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from crypto.pedersen import Opening
from ledger import builders
from ledger.effects import Effects
from ledger.envelope import Envelope, sign
from ledger.errors import Code, Rejection
from ledger.models import ClaimKind, KeyEntry, Location, RegisterOrganization, Role, SiteInfo
from ledger.openings import capacity_openings, unseal
from ledger.proofs import VerifyNow
from ledger.rules import Policy, apply
from ledger.statements import attestation_id, claim_id, issued_lot_id, output_lot_ids
from ledger.view import OPERATOR, MemoryView, apply_effects_to_view

NETWORK = "oretrace-test"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@dataclass
class Org:
    org_id: str
    roles: list[Role]
    signing: SigningKey = field(default_factory=SigningKey.generate)
    sealing: PrivateKey = field(default_factory=PrivateKey.generate)
    key_id: str = "k1"

    @property
    def sealing_public(self) -> str:
        return bytes(self.sealing.public_key).hex()


@dataclass
class World:
    root: SigningKey = field(default_factory=SigningKey.generate)
    view: MemoryView = field(default_factory=MemoryView)
    log: list[Effects] = field(default_factory=list)  # accepted publications, in ledger order
    orgs: dict[str, Org] = field(default_factory=dict)
    openings: dict[str, dict[str, Opening]] = field(default_factory=dict)  # what the wallets know
    capacity: dict[str, Opening] = field(default_factory=dict)  # attestation -> unsealed capacity
    issued: dict[str, tuple[int, Opening]] = field(default_factory=dict)  # attestation -> (next seq, cumulative)
    sites: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # site -> (operator, class, attestation)
    names: dict[str, str] = field(default_factory=dict)  # CLEAN, DIRTY, ... -> id
    clock: datetime = T0

    @property
    def policy(self) -> Policy:
        return Policy(network=NETWORK, root_public_key=self.root.verify_key.encode().hex())

    def fork(self) -> World:
        """An independent copy (records are immutable; only the containers are copied)."""
        twin = copy.copy(self)
        twin.view = MemoryView(**{k: dict(v) for k, v in vars(self.view).items()})
        for name in ("log", "orgs", "openings", "capacity", "issued", "sites", "names"):
            setattr(twin, name, copy.copy(getattr(self, name)))
        return twin

    @property
    def events(self) -> list[Envelope]:
        return [e.envelope for e in self.log]

    # -------------------------------------------------------------- signing
    def tick(self) -> datetime:
        self.clock += timedelta(minutes=1)
        return self.clock

    def sign(self, payload, signer: str, nonce: str | None = None, **overrides) -> Envelope:
        if signer == OPERATOR:
            key, key_id = self.root, "root"
        else:
            key, key_id = self.orgs[signer].signing, self.orgs[signer].key_id
        args = dict(
            network=NETWORK, signer=signer, key_id=key_id, signing_key=key, nonce=nonce or secrets.token_hex(16)
        )
        args["timestamp"] = overrides.pop("timestamp", None) or self.tick()
        args.update(overrides)
        return sign(payload, **args)

    def apply(self, envelope: Envelope, policy: Policy | None = None, backend: str | None = None) -> Effects:
        """Run the rules only (no state change), on the curve `backend` if given (the envelope
        is built on the default one: verifying is what differs between backends)."""
        if backend is None:
            return apply(envelope, self.view, policy or self.policy, VerifyNow())
        from conftest import curve_backend

        with curve_backend(backend):
            return apply(envelope, self.view, policy or self.policy, VerifyNow())

    def submit(self, envelope: Envelope) -> Effects:
        effects = self.apply(envelope)
        apply_effects_to_view(self.view, effects)
        self.log.append(effects)
        return effects

    # -------------------------------------------------------------- chain steps
    def register(self, org_id: str, *roles: Role) -> Org:
        org = Org(org_id, list(roles))
        self.orgs[org_id] = org
        payload = RegisterOrganization(
            org_id=org_id,
            name=org_id.replace("-", " ").title(),
            country="CD",
            roles=list(roles),
            signing_keys=[KeyEntry(key_id=org.key_id, public_key=org.signing.verify_key.encode().hex())],
            sealing_key=org.sealing_public,
        )
        self.submit(self.sign(payload, OPERATOR))
        return org

    def site_info(self, site_id: str, operator: str, origin_class: str) -> SiteInfo:
        return SiteInfo(
            site_id=site_id,
            operator=operator,
            name=f"Site {site_id}",
            country="CD",
            region="Lualaba",
            location=Location(lat=-10.7, lon=25.5),
            origin_class=origin_class,
        )

    def attest(
        self,
        site_id: str,
        operator: str,
        origin_class: str,
        capacity: int,
        auditor: str = "auditor",
        supersedes: str | None = None,
        days: tuple[int, int] = (-1, 30),
    ) -> str:
        nonce = secrets.token_hex(16)
        payload = builders.build_attestation(
            NETWORK,
            auditor,
            nonce,
            site=self.site_info(site_id, operator, origin_class),
            valid_from=T0 + timedelta(days=days[0]),
            valid_until=T0 + timedelta(days=days[1]),
            capacity=Opening.fresh(capacity),
            operator_sealing_key=self.orgs[operator].sealing_public,
            supersedes=supersedes,
        )
        self.submit(self.sign(payload, auditor, nonce))
        att_id = attestation_id(NETWORK, auditor, nonce)
        # the operator learns its capacity opening the way the SDK does: by unsealing
        plaintext = unseal(payload.capacity_opening_sealed, self.orgs[operator].sealing)
        self.capacity[att_id] = capacity_openings(plaintext)[att_id]
        self.sites[site_id] = (operator, origin_class, att_id)
        if supersedes in self.issued:  # the period's cumulative carries over, seq restarts at 0
            self.issued[att_id] = (0, self.issued[supersedes][1])
        return att_id

    def build_issue(self, site_id: str, value: int, nonce: str, attestation: str | None = None):
        """An issuance at the site, under its current attestation (or `attestation`)."""
        operator, origin_class, att_id = self.sites[site_id]
        att_id = attestation or att_id
        seq, before = self.issued.get(att_id, (0, Opening.zero()))
        opening = Opening.fresh(value)
        payload = builders.build_issue(
            NETWORK,
            operator,
            nonce,
            site_id=site_id,
            origin_class=origin_class,
            attestation_id=att_id,
            seq=seq,
            opening=opening,
            issued_before=before,
            capacity=self.capacity[att_id],
            product="cobalt hydroxide",
            owner_sealing_key=self.orgs[operator].sealing_public,
        )
        return payload, opening

    def issue(self, site_id: str, value: int) -> str:
        operator, origin_class, att_id = self.sites[site_id]
        nonce = secrets.token_hex(16)
        payload, opening = self.build_issue(site_id, value, nonce)
        self.submit(self.sign(payload, operator, nonce))
        seq, before = self.issued.get(att_id, (0, Opening.zero()))
        self.issued[att_id] = (seq + 1, before + opening)
        lot_id = issued_lot_id(NETWORK, operator, nonce)
        self.openings[lot_id] = {origin_class: opening}
        return lot_id

    def transfer(self, lot_id: str, to: str) -> Effects:
        owner = self.view.lot(lot_id).owner
        payload = builders.build_transfer(
            lot_id=lot_id, to=to, openings=self.openings[lot_id], receiver_sealing_key=self.orgs[to].sealing_public
        )
        return self.submit(self.sign(payload, owner))

    def transform(
        self,
        owner: str,
        inputs: list[str],
        outputs: list[dict[str, int]],
        nonce: str | None = None,
        process: str = "refine",
    ) -> list[str]:
        nonce = nonce or secrets.token_hex(16)
        planned = [
            builders.PlannedOutput("cobalt sulphate", {k: Opening.fresh(v) for k, v in out.items()}) for out in outputs
        ]
        payload = builders.build_transform(
            NETWORK,
            owner,
            nonce,
            process=process,
            inputs={lot_id: self.openings[lot_id] for lot_id in inputs},
            outputs=planned,
            owner_sealing_key=self.orgs[owner].sealing_public,
        )
        self.submit(self.sign(payload, owner, nonce))
        out_ids = output_lot_ids(NETWORK, owner, nonce, len(outputs))
        for lot_id, plan in zip(out_ids, planned, strict=True):
            self.openings[lot_id] = dict(plan.openings)
        return out_ids

    def claim(self, lot_ids: str | list[str], kind: ClaimKind, **params) -> str:
        """A claim by the (first) lot's owner over one lot or a set."""
        lot_ids = [lot_ids] if isinstance(lot_ids, str) else lot_ids
        owner = self.view.lot(lot_ids[0]).owner
        nonce = secrets.token_hex(16)
        payload = builders.build_claim(
            NETWORK, owner, nonce, lot_ids=lot_ids, kind=kind, openings={i: self.openings[i] for i in lot_ids}, **params
        )
        self.submit(self.sign(payload, owner, nonce))
        return claim_id(NETWORK, owner, nonce)


# Plaintext amounts used by the chain (large, so a leak scan cannot hit them by chance).
AMOUNTS = {
    "A1": 123_456_789,
    "A2": 200_000_017,
    "B1": 77_777_731,
    "R1": 45_678_913,
    "CLEAN.industrial": 120_000_007,
    "CLEAN.recycled_post_consumer": 45_000_011,
    "DIRTY.artisanal": 70_000_003,
}


def build_world() -> World:
    w = World()
    w.register("auditor", Role.auditor)
    w.register("mine-a", Role.mine)
    w.register("mine-b", Role.mine)
    w.register("recycler", Role.recycler)
    w.register("refiner", Role.refiner)
    w.register("oem", Role.oem)
    w.attest("site-a", "mine-a", "industrial", capacity=1_000_000_000)
    w.attest("site-b", "mine-b", "artisanal", capacity=500_000_000)
    w.attest("site-r", "recycler", "recycled_post_consumer", capacity=300_000_000)
    n = w.names
    n["A1"] = w.issue("site-a", AMOUNTS["A1"])
    n["A2"] = w.issue("site-a", AMOUNTS["A2"])
    n["B1"] = w.issue("site-b", AMOUNTS["B1"])
    n["R1"] = w.issue("site-r", AMOUNTS["R1"])
    for lot in ("A1", "B1", "R1"):
        w.transfer(n[lot], "refiner")
    (n["CLEAN"],) = w.transform(
        "refiner",
        [n["A1"], n["R1"]],
        [{"industrial": AMOUNTS["CLEAN.industrial"], "recycled_post_consumer": AMOUNTS["CLEAN.recycled_post_consumer"]}],
    )
    (n["DIRTY"],) = w.transform("refiner", [n["B1"]], [{"artisanal": AMOUNTS["DIRTY.artisanal"]}])
    w.transfer(n["CLEAN"], "oem")
    n["CLAIM_CLEAN"] = w.claim(n["CLEAN"], ClaimKind.ancestry_excludes, origin_class="artisanal")
    n["CLAIM_SHARE"] = w.claim(n["CLEAN"], ClaimKind.share_at_least, origin_class="recycled", p=16, q=100)
    return w


def refused(w: World, envelope: Envelope, code: Code, *fragments: str, backend: str | None = None) -> Rejection:
    """The rules' refusal of `envelope` on `w` (on the curve `backend` if given): its code is
    `code` and its message holds every fragment."""
    with pytest.raises(Rejection) as info:
        w.apply(envelope, backend=backend)
    assert info.value.code is code, info.value
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value


@functools.cache
def base_world() -> World:
    """Built once per test session, whichever test module asks first; fork() it before changing it."""
    return build_world()
