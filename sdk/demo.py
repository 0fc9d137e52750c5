"""The demo: a cobalt chain from DR Congo mines to an EV maker, through the HTTP API.

`run_scenario(client, wallets, size=...)` plays every step as the organisation
concerned, with its own wallet (its keys, its openings), through the GraphQL
API; it returns the outcome of every step that has an expected result, the
disclosure bundles of the claims, and the ids a newcomer can query.

The story (numbers and sources: docs/demo.md; every organisation is fictional):

1. The network operator registers the organisations; an auditor attests six
   sites (two large industrial concessions in Lualaba, an industrial mine in
   Haut-Katanga, two artisanal sites, and a European recycler's two lines:
   end-of-life batteries, post-consumer, and cell-production scrap,
   pre-consumer) and commits to each site's audited capacity for the year.
2. The sites issue lots (cobalt hydroxide, artisanal heterogenite
   concentrate, black mass), each with a capacity proof.
3. Laundering attempt 1: the Haut-Katanga mine, close to its audited
   capacity, tries to declare 300 t of cobalt bought from artisanal
   negotiants as its own output. Its wallet refuses to prove it; it then
   forges the proof (against a smaller amount, then against a stale
   cumulative); the API rejects both with typed errors.
4. A trader buys at the mine gate, merges the industrial lots and splits
   them. Laundering attempt 3: it merges the rest with the Haut-Katanga and
   artisanal lots, keeps the industrial cobalt and declares the artisanal
   cobalt as process loss; the loss-cap proof (a merge may lose 2 % of each
   class) is refused (BAD_PROOF). It then blends them honestly.
5. A Finnish refiner refines clean hydroxide with recycled black mass; a
   Chinese refiner refines the blend. Laundering attempt 2: the Chinese
   refiner declares more sulfate than its input held (forged balance proof);
   the API rejects it.
6. A cathode maker and a cell maker transform both lines; the OEM receives
   the cells of one pack model from one plant in one year as three
   deliveries of the clean line (batches A, A2, A3) and one of the mixed
   line (batch B).
7. The OEM claims, on the clean batch A, "no artisanal origin", the battery
   passport's "recycled cobalt 16.0-16.9 %" (share_in_range over the class
   set recycled = pre + post consumer) and "post-consumer recycled >= 10 %";
   then, passport-style over the model's whole year (an aggregate claim over
   the three clean deliveries: the commitments add, the proof is the same),
   "recycled cobalt 16.0-16.9 %", "of which post-consumer >= 10 %" and the
   contained cobalt of the three within +-1 % (all hold, and their bundles
   verify offline); on the mixed batch, "no artisanal origin" is refused
   (CLAIM_DOES_NOT_HOLD) while the honest mass-balance cap "artisanal share
   <= 25 %" holds.
8. Double counting: the cell maker claims over its clean cathode lot and the
   cells it made from it (the same cobalt twice). Its wallet refuses; sent
   anyway, the API refuses it (OVERLAPPING_LOTS).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.bundle import verify_bundle
from ledger.view import OPERATOR

from . import demo_data as D
from .attacks import (
    double_counting_claim,
    forge_inflated_transform,
    forge_issue_smaller_amount,
    forge_issue_stale_cumulative,
    forge_laundered_transform,
)
from .client import ApiRejection, Client
from .publisher import ProvingRefused, Publisher, proportional_outputs
from .receipts import BOOK_SUFFIX
from .wallet import Wallet

Progress = Callable[[str], None]

#: Number of stage messages `run_scenario` reports (for progress bars).
STAGES = 10


@dataclass
class Outcome:
    """One expected result of the scenario and what actually happened."""

    step: str
    expected: str
    observed: str
    ok: bool


@dataclass
class BundleResult:
    name: str
    lot_ids: list[str]  # the claimed set (one lot for a single-lot claim)
    claim_id: str
    statement: str
    path: Path | None
    ok: bool
    summary: str
    verify_seconds: float


@dataclass
class DemoResult:
    network: str
    root_public_key: str
    size: str
    outcomes: list[Outcome] = field(default_factory=list)
    bundles: list[BundleResult] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "root_public_key": self.root_public_key,
            "size": self.size,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "accepted": self.accepted,
            "rejected": self.rejected,
            "ids": self.ids,
            "outcomes": [o.__dict__ for o in self.outcomes],
            "bundles": [
                {**b.__dict__, "path": str(b.path) if b.path else None, "verify_seconds": round(b.verify_seconds, 3)}
                for b in self.bundles
            ],
        }


# --------------------------------------------------------------------------- wallets


def make_wallets(network: str = D.NETWORK, root_seed: bytes | None = None) -> dict[str, Wallet]:
    """Fresh keys for every demo organisation; the operator's key is the network's root key."""
    wallets: dict[str, Wallet] = {}
    for actor in D.ACTORS:
        if actor.org_id == OPERATOR:
            w = Wallet.generate(OPERATOR, network, key_id="root", name=actor.name, country=actor.country, roles=[])
            if root_seed is not None:
                w.signing_seed = root_seed
        else:
            w = Wallet.generate(actor.org_id, network, name=actor.name, country=actor.country, roles=list(actor.roles))
        wallets[actor.org_id] = w
    root = wallets[OPERATOR].signing_public_hex
    for w in wallets.values():  # every wallet pins the root key when it is created (sdk.registry)
        w.root_public_key = root
    return wallets


def save_wallets(wallets: dict[str, Wallet], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for org_id, w in wallets.items():
        w.save(directory / f"{org_id}.json")


def load_wallets(directory: Path) -> dict[str, Wallet]:
    """The wallets saved by `save_wallets` (their receipt books beside them are not wallets)."""
    return {p.stem: Wallet.load(p) for p in sorted(directory.glob("*.json")) if not p.name.endswith(BOOK_SUFFIX)}


# --------------------------------------------------------------------------- scenario


class _Run:
    def __init__(self, client: Client, wallets: dict[str, Wallet], size: str, progress: Progress | None):
        self.client = client
        self.wallets = wallets
        self.sizes = D.SIZES[size]
        self.say = progress or (lambda _msg: None)
        self.pubs = {org: Publisher(w, client) for org, w in wallets.items()}
        op = wallets[OPERATOR]
        self.result = DemoResult(network=op.network, root_public_key=op.signing_public_hex, size=size)
        self.attestations: dict[str, str] = {}

    def p(self, org: str) -> Publisher:
        return self.pubs[org]

    def outcome(self, step: str, expected: str, observed: str, ok: bool) -> None:
        self.result.outcomes.append(Outcome(step, expected, observed, ok))
        self.say(("  [green]✓[/] " if ok else "  [bold red]✗[/] ") + step)

    async def accepted(self, coro):
        result = await coro
        self.result.accepted += 1
        return result

    async def expect_rejection(self, step: str, code: str | set[str], coro) -> None:
        codes = {code} if isinstance(code, str) else set(code)
        expected = "API rejects: " + " or ".join(sorted(codes))
        try:
            await coro
        except ApiRejection as exc:
            self.result.rejected += 1
            self.outcome(step, expected, f"{exc.code}: {exc.message}", exc.code in codes)
            return
        self.result.accepted += 1
        self.outcome(step, expected, "ACCEPTED: the ledger let it through", False)

    # ------------------------------------------------------------------ steps
    async def register(self) -> None:
        self.say("The operator registers the log's checkpoint key and the organisations")
        op = self.p(OPERATOR)
        log_key = await self.client.log_key()  # the demo's operator runs this server: its key is the server's
        if not log_key["registered"]:
            await self.accepted(op.register_log_key(log_key["origin"], log_key["publicKey"]))
        for org, w in self.wallets.items():
            if org != OPERATOR:
                await self.accepted(op.register_wallet(w))

    async def attest(self) -> None:
        self.say("The auditor attests the sites and commits to their capacities")
        valid_from, valid_until = D.attestation_period()
        auditor = self.p("copperbelt-audit")
        for s in D.SITES:
            r = await self.accepted(
                auditor.attest_site(
                    site_id=s.site_id, operator=s.operator, name=s.name, country=s.country, region=s.region,
                    lat=s.lat, lon=s.lon, origin_class=s.origin_class,
                    valid_from=valid_from, valid_until=valid_until, capacity_g=s.capacity_g,
                )
            )  # fmt: skip
            self.attestations[s.site_id] = r.attestation_id
        self.result.ids["attestation_lk"] = self.attestations["lk-main"]

    async def issue(self, org: str, site: str, grams: int, product: str) -> str:
        r = await self.accepted(
            self.p(org).issue(site_id=site, attestation_id=self.attestations[site], amount_g=grams, product=product)
        )
        return r.lot_ids[0]

    async def mines_issue(self) -> dict[str, list[str]]:
        z = self.sizes
        self.say("Mines, artisanal sites and the recycler issue lots (with capacity proofs)")
        lots: dict[str, list[str]] = {"kw": [], "fg": []}
        for _ in range(z.shipments):
            lots["kw"].append(await self.issue("kolwezi-mining", "kw-west", z.kw_lot, D.hydroxide(z.kw_lot)))
            lots["fg"].append(await self.issue("fungurume-cobalt", "fg-hills", z.fg_lot, D.hydroxide(z.fg_lot)))
        bulk = await self.issue(
            "likasi-resources", "lk-main", z.lk_bulk, D.hydroxide(z.lk_bulk) + ", deliveries earlier this year"
        )
        lots["lk_bulk"] = [bulk]
        lots["lk"] = [await self.issue("likasi-resources", "lk-main", z.lk_lot, D.hydroxide(z.lk_lot))]
        lots["kasulo"] = [
            await self.issue("kasulo-coop", "kasulo-asm", z.kasulo_lot, "hand-sorted heterogenite concentrate (ASM)")
        ]
        lots["kambove"] = [
            await self.issue("kambove-coop", "kambove-asm", z.kambove_lot, "hand-sorted heterogenite concentrate (ASM)")
        ]
        # sized so that the recycled share at the Finnish refinery is 16.5 % of the 4 x recycled_lot of clean
        # hydroxide (16.0-16.9 % claimed downstream); two thirds end-of-life batteries, one third production scrap
        recycled_g = 4 * z.recycled_lot * 165 // 835
        post_g = recycled_g * 2 // 3
        lots["recycled"] = [
            await self.issue("nordic-recycling", "nbr-plant", post_g, D.black_mass(post_g)),
            await self.issue("nordic-recycling", "nbr-scrap", recycled_g - post_g, "cell-production scrap"),
        ]
        self.result.ids["lot_kw_first"] = lots["kw"][0]
        self.result.ids["lot_kasulo"] = lots["kasulo"][0]
        return lots

    async def laundering_capacity(self) -> None:
        z = self.sizes
        self.say("Laundering attempt 1: the Haut-Katanga mine declares artisanal cobalt as its own output")
        lk = self.p("likasi-resources")
        att = self.attestations["lk-main"]
        step = f"Haut-Katanga mine declares {z.overclaim / D.T:,.0f} t Co beyond its audited capacity"
        honest = step + ", honest wallet"
        try:
            await lk.issue(site_id="lk-main", attestation_id=att, amount_g=z.overclaim, product=D.hydroxide(z.overclaim))
        except ProvingRefused as exc:
            self.outcome(honest, "wallet refuses to prove", f"refused: {exc}", True)
        except ApiRejection as exc:
            self.outcome(honest, "wallet refuses to prove", f"sent, then {exc.code}", False)
        else:
            self.outcome(honest, "wallet refuses to prove", "ACCEPTED", False)
        _, before, _ = await lk._issuance_state(att)
        left = lk.wallet.capacity(att).opening.value - before.value
        forged = await forge_issue_smaller_amount(
            lk, site_id="lk-main", attestation_id=att, amount_g=z.overclaim, pretend_g=max(left // 2, 1),
            product=D.hydroxide(z.overclaim),
        )  # fmt: skip
        await self.expect_rejection(
            step + ", capacity proof forged for a smaller amount", "BAD_PROOF", lk.submit(forged)
        )
        forged = await forge_issue_stale_cumulative(
            lk, site_id="lk-main", attestation_id=att, amount_g=z.overclaim, product=D.hydroxide(z.overclaim)
        )
        await self.expect_rejection(
            step + ", chained onto a stale cumulative (as if nothing was issued this year)",
            "ISSUANCE_OUT_OF_SEQUENCE",
            lk.submit(forged),
        )

    async def trade(self, lots: dict[str, list[str]]) -> tuple[str, str]:
        z = self.sizes
        self.say("Mines sell to the trader, which merges, splits and blends")
        trader = "lakeside-trading"
        for org, key in (
            ("kolwezi-mining", "kw"), ("fungurume-cobalt", "fg"), ("likasi-resources", "lk"),
            ("kasulo-coop", "kasulo"), ("kambove-coop", "kambove"),
        ):  # fmt: skip
            for lot in lots[key]:
                await self.accepted(self.p(org).transfer(lot, trader))
        t = self.p(trader)
        industrial = lots["kw"] + lots["fg"]
        total = z.shipments * (z.kw_lot + z.fg_lot)
        merged = await self.accepted(
            t.transform_proportional("merge", industrial, [(D.hydroxide(total) + ", LSM blend", total)])
        )
        clean_g = 4 * z.recycled_lot  # with the recycled lots: 16.5 % recycled at the Finnish refinery
        split = await self.accepted(
            t.transform_proportional(
                "split",
                merged.lot_ids,
                [(D.hydroxide(clean_g) + ", LSM only", clean_g), (D.hydroxide(total - clean_g) + ", LSM", total - clean_g)],
            )
        )
        clean, rest = split.lot_ids
        blend_in = [rest, *lots["lk"], *lots["kasulo"], *lots["kambove"]]
        blend_g = sum([(await t.held(x)).total for x in blend_in])
        self.say("Laundering attempt 3: the trader merges, keeps the industrial cobalt and declares the artisanal as loss")
        held = [(await t.held(x)).openings for x in blend_in]
        industrial_g = sum(o["industrial"].value for o in held if "industrial" in o)
        laundered = proportional_outputs([{"industrial": o["industrial"]} for o in held if "industrial" in o],
                                         [industrial_g], ["cobalt hydroxide, LSM only"])  # fmt: skip
        await self.expect_rejection(
            f"trader declares all {(blend_g - industrial_g) / D.T:,.1f} t Co of artisanal input as process loss"
            " (2 % merge loss cap)",
            "BAD_PROOF",
            t.submit(forge_laundered_transform(t, process="merge", inputs=blend_in, outputs=laundered)),
        )
        blend = await self.accepted(
            t.transform_proportional("merge", blend_in, [(D.hydroxide(blend_g) + ", LSM + ASM blend", blend_g)])
        )
        await self.accepted(t.transfer(clean, "bothnia-refining"))
        await self.accepted(t.transfer(blend.lot_ids[0], "qiantang-cobalt"))
        for lot in lots["recycled"]:
            await self.accepted(self.p("nordic-recycling").transfer(lot, "bothnia-refining"))
        self.result.ids["lot_trader_blend"] = blend.lot_ids[0]
        return clean, blend.lot_ids[0]

    def recovered(self, grams: int, recovery: tuple[int, int]) -> int:
        return grams * recovery[0] // recovery[1]

    async def refine(self, org: str, inputs: list[str]) -> str:
        pub = self.p(org)
        grams = self.recovered(sum([(await pub.held(x)).total for x in inputs]), D.REFINERY_RECOVERY)
        r = await self.accepted(pub.transform_proportional("refine", inputs, [(D.sulfate(grams), grams)]))
        return r.lot_ids[0]

    async def refiners(self, clean: str, blend: str, recycled: list[str]) -> tuple[str, str]:
        self.say("Refiners turn hydroxide (and black mass) into cobalt sulfate")
        sulfate_fi = await self.refine("bothnia-refining", [clean, *recycled])

        self.say("Laundering attempt 2: the Chinese refiner declares more sulfate than its input held")
        cn = self.p("qiantang-cobalt")
        held = await cn.held(blend)
        grams = self.recovered(held.total, D.REFINERY_RECOVERY)
        honest = proportional_outputs([held.openings], [grams], [D.sulfate(grams)])
        extra = held.total * 8 // 100
        forged = forge_inflated_transform(
            cn, process="refine", inputs=[blend], honest_outputs=honest, inflate_g={"industrial": extra}
        )
        await self.expect_rejection(
            f"Chinese refiner declares {extra / D.T:,.1f} t Co more sulfate than its input held (forged balance proof)",
            "BAD_PROOF",
            cn.submit(forged),
        )
        sulfate_cn = await self.refine("qiantang-cobalt", [blend])
        await self.accepted(self.p("bothnia-refining").transfer(sulfate_fi, "vistula-cathode"))
        await self.accepted(cn.transfer(sulfate_cn, "vistula-cathode"))
        return sulfate_fi, sulfate_cn

    async def downstream(self, sulfate_fi: str, sulfate_cn: str) -> tuple[list[str], str]:
        """(the OEM's clean deliveries A, A2, A3; its mixed delivery B)."""
        z = self.sizes
        self.say("The cathode maker converts sulfate to NMC811; the cell maker makes cells for the OEM")
        cam = self.p("vistula-cathode")
        cathodes = []
        for lot in (sulfate_fi, sulfate_cn):  # two segregated production lines
            grams = self.recovered((await cam.held(lot)).total, D.CATHODE_RECOVERY)
            r = await self.accepted(cam.transform_proportional("convert", [lot], [(D.cathode(grams), grams)]))
            cathodes.append(r.lot_ids[0])
            await self.accepted(cam.transfer(r.lot_ids[0], "alfold-cells"))
        cells = self.p("alfold-cells")
        # one pack model, one plant, one year: three deliveries of the clean line (the first
        # the size of the mixed line's batch B ratio as before), one of the mixed line
        lines = (
            (cathodes[0], [("A", z.packs_clean), ("A2", z.packs_clean * 3 // 5), ("A3", z.packs_clean * 2 // 5)]),
            (cathodes[1], [("B", z.packs_mixed)]),
        )
        delivered: list[list[str]] = []
        for lot, batches in lines:
            grams = self.recovered((await cells.held(lot)).total, D.CELL_RECOVERY)
            outputs = [(D.cells(n * D.PACK_CO_G) + f", {D.PACK_MODEL}, batch {tag}", n * D.PACK_CO_G) for tag, n in batches]
            rest = grams - sum(g for _, g in outputs)
            r = await self.accepted(cells.transform_proportional("convert", [lot], [*outputs, (D.cells(rest), rest)]))
            for out in r.lot_ids[: len(batches)]:
                await self.accepted(cells.transfer(out, "rhine-motors"))
            delivered.append(r.lot_ids[: len(batches)])
            if lot == cathodes[0]:
                self.result.ids["lot_cathode_clean"], self.result.ids["lot_cells_clean_rest"] = lot, r.lot_ids[-1]
        clean, (mixed,) = delivered
        self.result.ids["lot_pack_clean"], self.result.ids["lot_pack_mixed"] = clean[0], mixed
        self.result.ids["lot_pack_clean_a2"], self.result.ids["lot_pack_clean_a3"] = clean[1], clean[2]
        return clean, mixed

    async def claims(self, clean_lots: list[str], mixed: str, out_dir: Path | None) -> None:
        self.say("The OEM publishes claims (single-lot and aggregate); bundles are fetched and verified offline")
        oem = self.p("rhine-motors")
        clean = clean_lots[0]
        year_g = sum([(await oem.held(x)).total for x in clean_lots])
        wanted = [
            ("clean-no-artisanal", [clean], dict(kind="ancestry_excludes", origin_class="artisanal")),
            # battery-passport style: recycled cobalt 16.0-16.9 %, of which post-consumer >= 10 %
            ("clean-recycled-16pct", [clean], dict(kind="share_in_range", origin_class="recycled", p=160, p_max=169, q=1000)),
            ("clean-post-consumer-10pct", [clean],
             dict(kind="share_at_least", origin_class="recycled_post_consumer", p=10, q=100)),
            ("mixed-artisanal-max-25pct", [mixed], dict(kind="share_at_most", origin_class="artisanal", p=25, q=100)),
            # the passport's figures per model, plant and year: aggregate claims over the three deliveries
            ("model-year-recycled-16pct", clean_lots,
             dict(kind="share_in_range", origin_class="recycled", p=160, p_max=169, q=1000)),
            ("model-year-post-consumer-10pct", clean_lots,
             dict(kind="share_at_least", origin_class="recycled_post_consumer", p=100, q=1000)),
            ("model-year-cobalt-amount", clean_lots,
             dict(kind="amount_in_range", low=year_g * 99 // 100, high=year_g * 101 // 100)),
        ]
        published = []
        for name, lots, params in wanted:
            kind = params.pop("kind")
            try:
                r = await self.accepted(oem.claim(lots, kind, **params))
            except (ApiRejection, ProvingRefused) as exc:
                self.outcome(f"OEM claim {name}", "accepted", f"refused: {exc}", False)
                continue
            published.append((name, sorted(lots), r.claim_id))
            self.result.ids[f"claim_{name.replace('-', '_')}"] = r.claim_id
        await self.expect_rejection(
            "OEM claims 'no artisanal origin' for pack batch B (mixed line)",
            "CLAIM_DOES_NOT_HOLD",
            oem.claim(mixed, "ancestry_excludes", origin_class="artisanal"),
        )
        await self.double_counting()
        root = self.result.root_public_key
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "root-key.hex").write_text(root + "\n")
        first_bundle = None
        for name, lots, claim_id in published:
            bundle = await self.client.disclosure_bundle(None, claim_id)  # the server derives the lots
            path = None
            if out_dir is not None:
                path = out_dir / f"{name}.json"
                path.write_text(json.dumps(bundle, indent=1) + "\n")
            started = time.perf_counter()
            report = verify_bundle(bundle, root)
            elapsed = time.perf_counter() - started
            statement = report.claim.get("statement", name)
            scope = report.claim.get("scope", "")
            self.result.bundles.append(BundleResult(name, lots, claim_id, statement, path, report.ok, report.summary, elapsed))
            self.outcome(
                f"bundle {name}.json verifies offline",
                "valid",
                f"{'VALID' if report.ok else 'INVALID'}: {statement} {scope} ({report.events} events,"
                f" {report.range_proofs} range proofs, {elapsed:.1f} s)",
                report.ok,
            )
            first_bundle = first_bundle or bundle
        if first_bundle is not None:
            tampered = tamper(first_bundle)
            report = verify_bundle(tampered, root)
            self.outcome(
                "a copy of that bundle with one commitment changed, verified offline",
                "invalid",
                report.summary[:160],
                not report.ok,
            )

    async def double_counting(self) -> None:
        """The cell maker claims over its clean cathode lot (consumed) and the cells it made from it."""
        self.say("Double counting: the cell maker claims over a lot and the cells made from it")
        cells = self.p("alfold-cells")
        lots = [self.result.ids["lot_cathode_clean"], self.result.ids["lot_cells_clean_rest"]]
        params = dict(origin_class="recycled", p=160, q=1000)
        step = "cell maker claims 'recycled >= 16 %' over its cathode lot and the cells made from it"
        checked, expected = step + ", wallet check before sending", "wallet refuses to send"
        try:
            await cells.claim(lots, "share_at_least", **params)
        except ProvingRefused as exc:
            self.outcome(checked, expected, f"refused: {exc}", True)
        except ApiRejection as exc:
            self.outcome(checked, expected, f"sent, then {exc.code}", False)
        else:
            self.outcome(checked, expected, "ACCEPTED", False)
        await self.expect_rejection(
            step + ", sent anyway (the same cobalt counted twice)",
            "OVERLAPPING_LOTS",
            cells.submit(double_counting_claim(cells, lots, "share_at_least", **params)),
        )


def tamper(bundle: dict[str, Any]) -> dict[str, Any]:
    """A copy of the bundle with the first issued lot's commitment swapped for the generator."""
    from crypto.group import Point

    copy_ = copy.deepcopy(bundle)
    for event in copy_["events"]:
        payload = event["payload"]
        if payload.get("type") == "issue":
            payload["commitment"] = Point.generator().hex()
            return copy_
    copy_["events"][-1]["signature"] = "00" * 64
    return copy_


async def run_scenario(
    client: Client,
    wallets: dict[str, Wallet],
    *,
    size: str = "full",
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Play the whole story through `client`; see the module docstring."""
    started = time.perf_counter()
    run = _Run(client, wallets, size, progress)
    await run.register()
    await run.attest()
    lots = await run.mines_issue()
    await run.laundering_capacity()
    clean, blend = await run.trade(lots)
    sulfate_fi, sulfate_cn = await run.refiners(clean, blend, lots["recycled"])
    clean_deliveries, pack_mixed = await run.downstream(sulfate_fi, sulfate_cn)
    await run.claims(clean_deliveries, pack_mixed, out_dir)
    ids = run.result.ids
    ids["org_oem"] = "rhine-motors"
    ids["site_kasulo"] = "kasulo-asm"
    run.result.seconds = time.perf_counter() - started
    return run.result
