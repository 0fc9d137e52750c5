"""Publishing: from a wallet's openings to accepted events on the server.

`Publisher(wallet, client)` builds each payload with the pure builders of
`ledger.builders` (which prove: range, capacity, balance, claim proofs), signs
it with the wallet's key, submits it through the GraphQL client, and only
after the server accepted it updates the wallet (new lots and their openings,
spent inputs) and saves it. A refused publication leaves the wallet as it was.

Proving is CPU-bound: it runs in a worker thread, so an application (or the
demo, which may host the server in the same process) keeps its event loop
responsive.

The honest prover refuses to prove something false: an issuance beyond the
attested capacity, outputs exceeding inputs, a share claim that does not hold.
It raises `ProvingRefused` before anything is sent.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crypto.errors import DecodeError, ProvingError
from crypto.group import Point
from crypto.pedersen import Opening, commit_opening
from ledger.builders import (
    PlannedOutput,
    build_attestation,
    build_claim,
    build_issue,
    build_transfer,
    build_transform,
)
from ledger.envelope import Envelope, sign
from ledger import statements as st
from ledger.models import (
    MAX_CLAIM_LOTS,
    ORIGIN_CLASSES,
    AttestSite,
    ClaimKind,
    Issue,
    KeyEntry,
    Location,
    RegisterLogKey,
    RegisterOrganization,
    RevokeAttestation,
    Role,
    SiteInfo,
    Transfer,
    Transform,
)
from ledger.view import OPERATOR

from .client import ApiRejection, Client
from .public_text import quantity_in
from .receipts import Receipt, ReceiptBook, book_path
from .registry import Registry, UntrustedAnswer
from .wallet import LotEntry, Wallet, WalletError

ROOT_KEY_ID = "root"


class ProvingRefused(Exception):
    """The wallet's prover will not prove a false statement (nothing was sent)."""


class PublicQuantity(ProvingRefused):
    """A product text states a mass, volume or percentage (nothing was sent)."""


class ClaimSetRefused(ProvingRefused):
    """A claim's set of lots breaks a rule the SDK can see before sending: a lot listed
    twice, no lot or more than MAX_CLAIM_LOTS, a lot neither held nor consumed by the
    organisation, or a lot upstream of another (nothing was sent)."""


def check_product_text(text: str, *, allow_public_quantity: bool = False, what: str = "product text") -> None:
    """PublicQuantity if `text` (the `what` of an envelope: "product text", "site name", ...)
    states a quantity (see sdk.public_text) and that was not explicitly allowed: every text
    field is public, in every envelope and bundle."""
    found = None if allow_public_quantity else quantity_in(text)
    if found is not None:
        raise PublicQuantity(
            f"the {what} {text!r} states {found!r}: every text field is public (every bundle shows it)"
            " and this would reveal what the commitments hide; remove it, or pass allow_public_quantity=True"
            " (--allow-public-quantity) if it is meant to be public"
        )
class NotSaved(Exception):
    """The server accepted `published` but the wallet could not be saved (`reason`).

    The pending-publication journal (if any) is kept, so running the command
    again resubmits the same envelope and saves what it learns; `oretrace
    wallet restore` rebuilds the wallet from the server as well.
    """

    def __init__(self, published: Published, reason: OSError):
        self.published = published
        self.reason = reason
        super().__init__(f"published {published.event_id} but the wallet was not saved: {reason}")


def new_nonce() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Published:
    """What the server answered for an accepted publication."""

    event_id: str
    type: str
    lot_ids: list[str]
    claim_id: str | None = None
    attestation_id: str | None = None
    log_index: int | None = None  # leaf index in the transparency log (the receipt)

    @classmethod
    def from_result(cls, r: Mapping[str, Any]) -> Published:
        return cls(
            event_id=r["eventId"],
            type=r["type"],
            lot_ids=list(r.get("lotIds") or []),
            claim_id=r.get("claimId"),
            log_index=r.get("logIndex"),
            attestation_id=r.get("attestationId"),
        )

    @classmethod
    def expected(cls, envelope: Envelope, log_index: int | None = None) -> Published:
        """What an accepted `envelope` creates, derived locally: its event id and the
        ids `ledger.statements` derives from (network, signer, nonce) for its lots,
        claim or attestation. The publisher records these, never the server's word."""
        p, args = envelope.payload, (envelope.network, envelope.signer, envelope.nonce)
        match p:
            case Issue():
                lot_ids = [st.issued_lot_id(*args)]
            case Transform(outputs=outputs):
                lot_ids = st.output_lot_ids(*args, len(outputs))
            case _:
                lot_ids = []
        return cls(
            event_id=envelope.event_id,
            type=p.type,
            lot_ids=lot_ids,
            claim_id=st.claim_id(*args) if p.type == "publish_claim" else None,
            attestation_id=st.attestation_id(*args) if isinstance(p, AttestSite) else None,
            log_index=log_index,
        )


def proportional_outputs(
    inputs: Sequence[Mapping[str, Opening]],
    totals: Sequence[int],
    products: Sequence[str],
) -> list[PlannedOutput]:
    """Outputs of the given total grams, each with the inputs' class mix (mass-balance allocation).

    Per class, output i gets floor(total_i * input_k / input_total); whatever is
    left over (rounding and process losses) becomes the loss. Fresh blindings.
    ProvingRefused if the outputs would need more than the inputs hold.
    """
    available = {k: sum(o.get(k, Opening.zero()).value for o in inputs) for k in ORIGIN_CLASSES}
    grand = sum(available.values())
    if sum(totals) > grand:
        raise ProvingRefused(f"outputs of {sum(totals)} g exceed the {grand} g of cobalt in the inputs")
    planned: list[PlannedOutput] = []
    used = dict.fromkeys(ORIGIN_CLASSES, 0)
    for total, product in zip(totals, products, strict=True):
        shares = {k: total * available[k] // grand if grand else 0 for k in ORIGIN_CLASSES}
        # hand the rounding remainder to the largest class that still has material
        short = total - sum(shares.values())
        for k in sorted(ORIGIN_CLASSES, key=lambda c: -available[c]):
            room = available[k] - used[k] - shares[k]
            take = min(room, short)
            if take > 0:
                shares[k] += take
                short -= take
        for k in ORIGIN_CLASSES:
            used[k] += shares[k]
        planned.append(
            PlannedOutput(product, {k: Opening.fresh(v) for k, v in shares.items() if available[k] > 0})
        )
    return planned


class Publisher:
    """Acts for one organisation: its wallet signs, the client submits."""

    def __init__(
        self, wallet: Wallet, client: Client, *, autosave: bool = True, journal=None, fetch_receipts: bool = False
    ):
        """`journal`: an `sdk.journal.Journal`; each envelope is recorded there before it is
        sent and cleared once the outcome is saved (a retry resubmits it: `resume_pending`).
        `fetch_receipts`: after each accepted publication, ask for its log receipt at once
        (one more round trip; the `oretrace` commands do); otherwise it stays pending in
        `receipts` until `collect_receipts`. Receipts are kept beside a saved wallet
        (`sdk.receipts.book_path`), in memory otherwise."""
        self.wallet = wallet
        self.client = client
        self.autosave = autosave and wallet.path is not None
        self.fetch_receipts = fetch_receipts
        self.receipts = ReceiptBook(book_path(wallet.path) if self.autosave else None)
        self._registry: Registry | None = None
        self.journal = journal

    # ---------------------------------------------------------------- basics
    @property
    def org_id(self) -> str:
        return self.wallet.org_id

    @property
    def network(self) -> str:
        return self.wallet.network

    def sign(self, payload, nonce: str) -> Envelope:
        return sign(
            payload,
            network=self.wallet.network,
            signer=self.wallet.org_id,
            key_id=self.wallet.key_id,
            signing_key=self.wallet.signing_key,
            nonce=nonce,
        )

    async def submit(self, envelope: Envelope) -> Published:
        """Publish `envelope` (recorded in the journal first, if any); the ids it created,
        derived locally. UntrustedAnswer if the server's answer names other ids: the wallet
        files openings under lot ids it computed itself, so a lying answer cannot misfile them."""
        if self.journal is not None:
            self.journal.record(envelope)  # before it leaves the machine
        try:
            answer = Published.from_result(await self.client.publish(envelope))
        except ApiRejection as exc:
            if self.journal is not None and exc.code != "OUTCOME_UNKNOWN":  # a definite refusal
                self.journal.clear()
            raise
        expected = Published.expected(envelope, answer.log_index)
        if answer != expected:
            raise UntrustedAnswer(
                f"the server answered the publication of {expected.event_id} with ids it does not create"
                f" (event {answer.event_id!r}, lots {answer.lot_ids!r}, claim {answer.claim_id!r},"
                f" attestation {answer.attestation_id!r})"
            )
        if expected.log_index is not None:
            self.receipts.record(envelope, expected.log_index)
            if self.fetch_receipts:
                await self.receipts.complete(self.client, event_ids=[envelope.event_id])
        return expected

    async def collect_receipts(self) -> list[Receipt]:
        """Fetch and check every pending log receipt (sdk.receipts.ReceiptBook.complete); the new ones."""
        return await self.receipts.complete(self.client)

    def _save(self) -> None:
        if self.autosave:
            self.wallet.save()

    @property
    def registry(self) -> Registry:
        """The network's registry as the wallet's pinned root key vouches for it."""
        if self._registry is None:
            self._registry = Registry(self.client, self.network, self.wallet.pinned_root_key)
        return self._registry
    def settle(self, result: Published, *, save: bool = True) -> Published:
        """After acceptance: save the wallet, then drop the journal entry; NotSaved if saving fails."""
        if save:
            try:
                self._save()
            except OSError as exc:
                raise NotSaved(result, exc) from exc
        if self.journal is not None:
            self.journal.clear()
        return result

    async def sealing_key_of(self, org_id: str) -> str:
        """`org_id`'s sealing key from its root-signed registration (UntrustedAnswer if the
        server shows another; ApiRejection UNKNOWN_ORGANIZATION if it knows none)."""
        return await self.registry.sealing_key(org_id)

    async def held(self, lot_id: str) -> LotEntry:
        """The wallet's entry for a lot, learning incoming transfers from the server if needed."""
        if lot_id not in self.wallet.lots:
            await sync(self.wallet, self.client)
            self._save()
        return self.wallet.lot(lot_id)

    async def _prove_and_submit(self, build, /, **fields) -> Published:
        """Prove a payload with the ledger builder `build` (called off the event loop as
        `build(network, signer, nonce, **fields)`, with this organisation, this network and a
        fresh nonce, since the proofs' transcripts and the derived ids bind all three), sign it
        with the same nonce and submit it. ProvingRefused if the builder refuses; what `submit`
        raises otherwise. The caller settles the result."""
        nonce = new_nonce()
        try:
            payload = await asyncio.to_thread(build, network=self.network, signer=self.org_id, nonce=nonce, **fields)
        except ProvingError as exc:
            raise ProvingRefused(str(getattr(exc, "reason", None) or exc)) from None
        return await self.submit(self.sign(payload, nonce))

    # ------------------------------------------------------------- operator
    async def register_organization(
        self,
        org_id: str,
        name: str,
        country: str,
        roles: Sequence[str],
        signing_public_key: str,
        sealing_public_key: str,
        key_id: str = "k1",
    ) -> Published:
        """Operator only: enter an organisation and its keys in the registry."""
        if self.wallet.org_id != OPERATOR:
            raise WalletError("only the network operator's wallet can register organisations")
        payload = RegisterOrganization(
            org_id=org_id,
            name=name,
            country=country,
            roles=[Role(r) for r in roles],
            signing_keys=[KeyEntry(key_id=key_id, public_key=signing_public_key)],
            sealing_key=sealing_public_key,
        )
        return self.settle(await self.submit(self.sign(payload, new_nonce())), save=False)

    async def register_log_key(self, origin: str, public_key: str, retire: Sequence[str] = ()) -> Published:
        """Operator only: register a key that signs the log's checkpoints (docs/log.md), retiring others."""
        if self.wallet.org_id != OPERATOR:
            raise WalletError("only the network operator's wallet can register log keys")
        payload = RegisterLogKey(origin=origin, public_key=public_key, retire=list(retire))
        return await self.submit(self.sign(payload, new_nonce()))

    async def register_wallet(self, other: Wallet, roles: Sequence[str] | None = None) -> Published:
        """Operator only: register the organisation owning `other` (name/country/roles from its meta)."""
        meta = other.meta
        return await self.register_organization(
            other.org_id,
            meta.get("name", other.org_id),
            meta.get("country", "ZZ"),
            list(roles or meta.get("roles", [])),
            other.signing_public_hex,
            other.sealing_public_hex,
            other.key_id,
        )

    # -------------------------------------------------------------- auditor
    async def attest_site(
        self,
        *,
        site_id: str,
        operator: str,
        name: str,
        country: str,
        region: str,
        lat: float,
        lon: float,
        origin_class: str,
        valid_from: datetime,
        valid_until: datetime,
        capacity_g: int,
        allow_public_quantity: bool = False,
        supersedes: str | None = None,
    ) -> Published:
        """Auditor: attest a site's origin class and commit to its capacity (sealed to the operator).

        The site's name and region are public text: PublicQuantity if one states a quantity (a
        capacity written into a name would undo its commitment), unless `allow_public_quantity`.

        `supersedes`: the site's current attestation that this one replaces (a capacity or
        class correction for an overlapping period); `capacity_g` then bounds the whole
        period's issuance, the predecessor's included (docs/ledger.md, section 5a). The
        server refuses an overlap without it (ATTESTATION_OVERLAP) and a predecessor that
        is unknown, of another site or already superseded (ATTESTATION_NOT_FOUND,
        SITE_MISMATCH, ATTESTATION_SUPERSEDED): ApiRejection with that code.
        """
        for what, text in (("site name", name), ("site region", region)):
            check_product_text(text, allow_public_quantity=allow_public_quantity, what=what)
        site = SiteInfo(
            site_id=site_id,
            operator=operator,
            name=name,
            country=country,
            region=region,
            location=Location(lat=lat, lon=lon),
            origin_class=origin_class,
        )
        result = await self._prove_and_submit(
            build_attestation,
            site=site,
            valid_from=valid_from,
            valid_until=valid_until,
            capacity=Opening.fresh(capacity_g),
            operator_sealing_key=await self.sealing_key_of(operator),
            supersedes=supersedes,
        )
        return self.settle(result, save=False)

    async def revoke_attestation(self, *, site_id: str, attestation_id: str, reason: str = "") -> Published:
        """Auditor who made it: revoke an attestation, so that no issuance under it is accepted any more.

        Issuances before it stand; the period can be re-attested by superseding it.
        ApiRejection WRONG_ROLE (another auditor's attestation), ATTESTATION_REVOKED,
        ATTESTATION_SUPERSEDED, ATTESTATION_NOT_FOUND or SITE_MISMATCH (of another site).
        `reason`: public text, at most 200 characters."""
        payload = RevokeAttestation(site_id=site_id, attestation_id=attestation_id, reason=reason)
        return self.settle(await self.submit(self.sign(payload, new_nonce())), save=False)

    # ----------------------------------------------------------------- mine
    async def _issuance_state(self, attestation_id: str) -> tuple[int, Opening, str]:
        """(next seq, opening of the cumulative so far, origin class), checked against the server.

        Under a superseding attestation the cumulative carries over the issuances of
        the attestations it supersedes (`Wallet.cumulative_opening`): the server's
        chain then starts at seq -1 with the predecessor's cumulative."""
        att = await self.client.attestation(attestation_id)
        if att is None:
            raise ApiRejection("ATTESTATION_NOT_FOUND", f"attestation {attestation_id} does not exist")
        mark = att["lastIssuance"]
        for attempt in range(2):
            count, issued_before = self.wallet.cumulative_opening(attestation_id)
            if mark is None and count == 0 and issued_before == Opening.zero():
                return 0, Opening.zero(), att["originClass"]
            if mark is not None and count == mark["seq"] + 1 and commit_opening(issued_before).hex() == mark["cumulative"]:
                return count, issued_before, att["originClass"]
            if attempt == 0:
                await sync(self.wallet, self.client)  # another device issued: learn its openings
        raise WalletError(
            f"the wallet's issuances under {attestation_id} do not match the server's cumulative commitment"
            " (run `oretrace wallet restore`)"
        )

    async def issue(
        self, *, site_id: str, attestation_id: str, amount_g: int, product: str, allow_public_quantity: bool = False
    ) -> Published:
        """Issue a lot of `amount_g` grams of contained cobalt at one of the organisation's sites.
        `product` is public text: PublicQuantity if it states a quantity, unless `allow_public_quantity`."""
        check_product_text(product, allow_public_quantity=allow_public_quantity)
        if attestation_id not in self.wallet.capacities:
            await sync(self.wallet, self.client)
        capacity = self.wallet.capacity(attestation_id)
        seq, issued_before, origin_class = await self._issuance_state(attestation_id)
        headroom = capacity.opening.value - issued_before.value
        if amount_g > headroom:
            raise ProvingRefused(
                f"issuing {amount_g:,} g would exceed the attested capacity of site {site_id}:"
                f" only {max(headroom, 0):,} g left in the period (attestation {attestation_id})"
            )
        opening = Opening.fresh(amount_g)
        result = await self._prove_and_submit(
            build_issue,
            site_id=site_id,
            origin_class=origin_class,
            attestation_id=attestation_id,
            seq=seq,
            opening=opening,
            issued_before=issued_before,
            capacity=capacity.opening,
            product=product,
            owner_sealing_key=self.wallet.sealing_public_hex,
        )
        self.wallet.add_lot(
            LotEntry(result.lot_ids[0], {origin_class: opening}, product, attestation_id=attestation_id, issue_seq=seq)
        )
        return self.settle(result)

    # ---------------------------------------------------------------- owner
    async def transfer(self, lot_id: str, to: str) -> Published:
        """Hand a lot to another organisation, sealing its openings to the receiver."""
        entry = await self.held(lot_id)
        payload = build_transfer(
            lot_id=lot_id, to=to, openings=entry.openings, receiver_sealing_key=await self.sealing_key_of(to)
        )
        result = await self.submit(self.sign(payload, new_nonce()))
        self.wallet.mark_spent([lot_id])
        return self.settle(result)

    async def transform(
        self, process: str, inputs: Sequence[str], outputs: Sequence[PlannedOutput], *, allow_public_quantity: bool = False
    ) -> Published:
        """Consume `inputs` (own, unconsumed lots) and create `outputs`; the rest is the loss.
        Output products are public text: PublicQuantity if one states a quantity, unless `allow_public_quantity`."""
        for plan in outputs:
            check_product_text(plan.product, allow_public_quantity=allow_public_quantity)
        in_openings = {lot_id: (await self.held(lot_id)).openings for lot_id in inputs}
        result = await self._prove_and_submit(
            build_transform,
            process=process,
            inputs=in_openings,
            outputs=list(outputs),
            owner_sealing_key=self.wallet.sealing_public_hex,
        )
        self.wallet.mark_spent(inputs)
        for lot_id, plan in zip(result.lot_ids, outputs, strict=True):
            self.wallet.add_lot(LotEntry(lot_id, dict(plan.openings), plan.product))
        return self.settle(result)

    async def transform_proportional(
        self, process: str, inputs: Sequence[str], outputs: Sequence[tuple[str, int]], *,
        allow_public_quantity: bool = False,
    ) -> Published:  # fmt: skip
        """Transform into outputs of given (product, grams), each with the inputs' class mix."""
        for product, _ in outputs:
            check_product_text(product, allow_public_quantity=allow_public_quantity)
        in_openings = [(await self.held(i)).openings for i in inputs]
        planned = proportional_outputs(in_openings, [g for _, g in outputs], [p for p, _ in outputs])
        return await self.transform(process, inputs, planned, allow_public_quantity=allow_public_quantity)

    async def claim(
        self,
        lots: str | Sequence[str],
        kind: str | ClaimKind,
        *,
        origin_class: str | None = None,
        p: int | None = None,
        q: int | None = None,
        low: int | None = None,
        high: int | None = None,
        p_max: int | None = None,
    ) -> Published:
        """Publish a claim about one lot or a set of lots (an aggregate), proven when it needs a proof.

        `lots`: a lot id, or 1 to MAX_CLAIM_LOTS ids in any order (sent sorted). Every lot
        must be held by the organisation or consumed by one of its transformations, and no
        lot may be upstream of another: ClaimSetRefused (nothing sent) when the wallet and
        the server's lot records show otherwise (the server's rules decide in the end).
        Share and amount claims are about the sum over the set, from the openings the
        wallet holds for every lot (WalletError if one is missing).
        `origin_class` is a class or a class set ("recycled" = pre + post consumer);
        share_in_range takes p <= p_max <= q (p/q <= share <= p_max/q)."""
        kind = ClaimKind(kind)
        lot_ids = sorted([lots] if isinstance(lots, str) else lots)
        await self._check_claim_set(lot_ids)
        openings = (
            None
            if kind is ClaimKind.ancestry_excludes
            else {lot_id: (await self.held(lot_id)).openings for lot_id in lot_ids}
        )
        result = await self._prove_and_submit(
            build_claim,
            lot_ids=lot_ids,
            kind=kind,
            openings=openings,
            origin_class=origin_class,
            p=p,
            q=q,
            low=low,
            high=high,
            p_max=p_max,
        )
        return self.settle(result, save=False)

    async def _check_claim_set(self, lot_ids: list[str]) -> None:
        """ClaimSetRefused for a set the ledger would refuse (ledger.rules._publish_claim):
        duplicates, size, a lot held by another organisation, a lot upstream of another
        (from each lot's provenance). A single lot is left to the server, as before."""
        if len(set(lot_ids)) != len(lot_ids):
            twice = sorted({i for i in lot_ids if lot_ids.count(i) > 1})
            raise ClaimSetRefused(f"lot(s) {', '.join(twice)} listed twice: a claim covers each lot once")
        if not 1 <= len(lot_ids) <= MAX_CLAIM_LOTS:
            raise ClaimSetRefused(f"a claim covers 1 to {MAX_CLAIM_LOTS} lots, not {len(lot_ids)}")
        if len(lot_ids) == 1:
            return
        for lot_id in lot_ids:
            record = await self.client.lot(lot_id)
            if record is None:
                raise ClaimSetRefused(f"lot {lot_id} is not in the ledger")
            owner = (record.get("owner") or {}).get("id")
            if owner != self.org_id:
                state = "was consumed while held by" if record.get("consumed") else "is held by"
                raise ClaimSetRefused(
                    f"lot {lot_id} {state} {owner}, not {self.org_id}: a claim covers lots the organisation"
                    " holds or consumed in its own transformations"
                )
        claimed = set(lot_ids)
        for lot_id in lot_ids:
            graph = await self.client.provenance(lot_id)
            upstream = sorted(claimed.intersection(n["id"] for n in graph["nodes"]) - {lot_id})
            if upstream:
                raise ClaimSetRefused(
                    f"lot {upstream[0]} is an ancestor of lot {lot_id}: its cobalt would count twice in the"
                    " aggregate; claim over one of them"
                )


# --------------------------------------------------------------------------- syncing and restoring


@dataclass
class SyncReport:
    sealed: int = 0  # sealed openings addressed to the organisation
    lots: int = 0  # lot openings learnt
    capacities: int = 0  # capacity openings learnt
    unreadable: int = 0  # ciphertexts that would not open (e.g. sealed to a rotated-out key)
    mismatched: int = 0  # openings that do not open their own envelope's commitments: ignored
    held: int = 0  # lots currently held and unconsumed


def sealed_box_of(env: Envelope) -> tuple[str, str, list[str]] | None:
    """(recipient, box, ids the box may open) of the sealed opening a signed envelope carries:
    issue and transform to the signer (the new lot ids), transfer to the receiver (the lot),
    attest_site to the site operator (the attestation id). None for other payloads."""
    p = env.payload
    match p:
        case Issue():
            return env.signer, p.opening_sealed_to_owner, [st.issued_lot_id(env.network, env.signer, env.nonce)]
        case Transform():
            ids = st.output_lot_ids(env.network, env.signer, env.nonce, len(p.outputs))
            return env.signer, p.openings_sealed_to_owner, ids
        case Transfer():
            return p.to, p.opening_sealed_to_receiver, [p.lot_id]
        case AttestSite():
            return p.site.operator, p.capacity_opening_sealed, [st.attestation_id(env.network, env.signer, env.nonce)]
    return None


async def sync(wallet: Wallet, client: Client, *, progress=None, full: bool = False) -> SyncReport:
    """Learn from the server every opening sealed to this organisation, trusting it for nothing.

    For each `sealedOpenings(recipient)` record the signed event is fetched and
    verified against the wallet's pinned root key (`sdk.registry`); the box is
    taken from that envelope (the record's copy must be byte-identical) and
    opened with the wallet's X25519 key. A lot opening is accepted only if it
    opens the commitments of a lot that envelope itself creates or transfers
    (issue: its commitment, under the verified attestation's class; transform:
    the output's commitments; transfer: the commitments of the lot's verified
    creating event); a capacity opening only from an attest_site event naming
    this organisation as the site's operator, and only if it opens that
    attestation's capacity commitment. Openings that fail are counted as
    `mismatched` (a sender's fault) and ignored. Lots no longer held
    unconsumed are then marked spent.

    UntrustedAnswer (nothing changed in the wallet) if the server's answers do
    not match what the root key vouches for. `full=True` re-reads everything
    (restore). `progress(done, total)` is called as items are processed.
    """
    from ledger.openings import SealedOpeningError, capacity_openings, lot_openings, unseal

    registry = Registry(client, wallet.network, wallet.pinned_root_key)
    report = SyncReport()
    lot_entries: list[LotEntry] = []
    capacities: list[tuple[str, str, Opening, str | None]] = []
    records = await client.sealed_openings(wallet.org_id)
    report.sealed = len(records)
    for n, record in enumerate(records, 1):
        if progress:
            progress(n - 1, len(records))
        lot_ids = list(record.get("lotIds") or [])
        if lot_ids and all(x in wallet.lots for x in lot_ids) and not full:
            continue
        env = await registry.verified_event(str(record.get("eventId")))
        carried = sealed_box_of(env)
        if carried is None or carried[0] != wallet.org_id:
            raise UntrustedAnswer(f"event {env.event_id}, listed as sealed to {wallet.org_id}, carries no box for it")
        _, box, ids = carried
        if record.get("ciphertext") != box:
            raise UntrustedAnswer(f"the sealed box served for event {env.event_id} is not the one its signed envelope carries")
        try:
            plaintext = unseal(box, wallet.sealing_key)
        except SealedOpeningError:
            report.unreadable += 1
            continue
        p = env.payload
        if isinstance(p, AttestSite):
            for att_id, opening in capacity_openings(plaintext).items() if "capacity" in plaintext else []:
                if att_id != ids[0] or not _opens_points({"c": p.capacity_commitment}, {"c": opening}):
                    report.mismatched += 1
                    continue
                if full or att_id not in wallet.capacities:
                    capacities.append((att_id, p.site.site_id, opening, p.supersedes))
                    report.capacities += 1
            continue
        if "lots" not in plaintext:
            report.mismatched += 1  # e.g. a capacity opening in a transfer's box: never accepted
            continue
        for lot_id, classes in lot_openings(plaintext).items():
            if lot_id not in ids:
                report.mismatched += 1
                continue
            commitments, product = await _created_lot(registry, env, lot_id)
            if not _opens_points(commitments, classes):
                report.mismatched += 1
                continue
            # the product name comes from the verified creating event, so lots received
            # by transfer keep it even once spent
            entry = LotEntry(lot_id, dict(classes), product)
            if isinstance(p, Issue):
                entry.attestation_id, entry.issue_seq = p.attestation_id, p.seq
            lot_entries.append(entry)
            report.lots += 1
    held_lots = await client.lots(owner=wallet.org_id, consumed=False)
    # every check passed: now change the wallet
    for att_id, site_id, opening, supersedes in capacities:
        wallet.add_capacity(att_id, site_id, opening, supersedes)
    for entry in lot_entries:
        wallet.add_lot(entry)
    held = {lot["id"] for lot in held_lots}
    report.held = len(held)
    for lot_id, entry in wallet.lots.items():
        entry.spent = lot_id not in held
    for lot in held_lots:
        if lot["id"] in wallet.lots and not wallet.lots[lot["id"]].product:
            wallet.lots[lot["id"]].product = lot.get("product", "")
    if progress:
        progress(len(records), len(records))
    return report


async def _created_lot(registry: Registry, env: Envelope, lot_id: str) -> tuple[dict[str, str], str]:
    """({origin class: commitment hex}, product) of `lot_id` as the signed envelope `env`
    states them, or for a transfer, as the verified event that created the lot does."""
    p = env.payload
    if isinstance(p, Issue):
        return {(await registry.attestation(p.attestation_id)).payload.site.origin_class: p.commitment}, p.product
    if isinstance(p, Transform):
        ids = st.output_lot_ids(env.network, env.signer, env.nonce, len(p.outputs))
        output = p.outputs[ids.index(lot_id)]
        return dict(output.commitments), output.product
    return await registry.created_lot(lot_id)


def _opens_points(published_hex: Mapping[str, str], classes: Mapping[str, Opening]) -> bool:
    """Do these openings open the published per-class commitments (absent = 0)?"""
    try:
        published = {k: Point.from_hex(v, allow_identity=True) for k, v in published_hex.items()}
    except DecodeError:
        return False
    return all(
        commit_opening(classes.get(k, Opening.zero())) == published.get(k, Point.identity())
        for k in set(published) | set(classes)
    )


async def restore(wallet: Wallet, client: Client, *, progress=None) -> SyncReport:
    """Rebuild a wallet's openings from its keys and the server (lost laptop)."""
    return await sync(wallet, client, progress=progress, full=True)
