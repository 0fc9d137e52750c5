"""The demo's cast and numbers: a cobalt chain from the Copperbelt to an EV pack.

Every organisation and site here is FICTIONAL; regions, product types and
orders of magnitude follow public figures (sources and assumptions in
docs/demo.md). All amounts are integer grams of *contained cobalt*.

Product texts are public (they are signed in clear into every envelope and
bundle), so they name the product and nothing else: no mass, no volume, no
grade. A grade with a lot's own amount would give its gross mass; with the
demo's bundles it would give the recycled share the claims keep hidden. The
product functions take the amount only so the demo's call sites read as what
was shipped; they never write it.

Conversions used for the demo's amounts (see docs/demo.md):
* cobalt hydroxide Co(OH)2 intermediate: ~30-40 % Co (35 % used here);
* cobalt sulfate heptahydrate CoSO4*7H2O: 20.96 % Co (58.93 / 281.10);
* NMC811 cathode LiNi0.8Mn0.1Co0.1O2: ~6.1 % Co (5.89 / 97.3);
* an NMC811 EV pack: ~0.08-0.1 kg Co per kWh, so ~6.5 kg Co for a 75 kWh pack.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

T = 1_000_000  # grams in a tonne
KG = 1_000

PACK_KWH = 75
PACK_CO_G = 6_500  # grams of cobalt in one 75 kWh NMC811 pack (illustrative)
#: The OEM's deliveries of one battery model from one plant in one year (the battery
#: passport reports recycled content per model, plant and year: EU 2023/1542 Art. 8).
PACK_MODEL = "Rhine Motors RM-75 packs, Leipzig plant, model year 2026"

NETWORK = "oretrace-demo"


@dataclass(frozen=True)
class Actor:
    org_id: str
    name: str
    country: str
    roles: tuple[str, ...]
    blurb: str


@dataclass(frozen=True)
class SiteSpec:
    site_id: str
    operator: str
    name: str
    country: str
    region: str
    lat: float
    lon: float
    origin_class: str
    capacity_g: int  # audited capacity of contained cobalt for the attestation period
    blurb: str


ACTORS: tuple[Actor, ...] = (
    Actor("operator", "oretrace demo network operator", "BE", ("operator",), "runs the registry; its key is the trust root"),
    Actor("copperbelt-audit", "Copperbelt Assurance SARL", "CD", ("auditor",), "third-party site auditor"),
    Actor("kolwezi-mining", "Kolwezi West Mining SA", "CD", ("mine",), "large-scale Cu-Co concession, Lualaba"),
    Actor("fungurume-cobalt", "Fungurume Hills Cobalt SA", "CD", ("mine",), "large-scale Cu-Co concession, Lualaba"),
    Actor("likasi-resources", "Likasi Hydroxide Resources SARL", "CD", ("mine",), "mid-size mine, Haut-Katanga"),
    Actor("kasulo-coop", "Coopérative minière de Kasulo", "CD", ("mine",), "artisanal mining cooperative, Kolwezi"),
    Actor("kambove-coop", "Coopérative artisanale de Kambove", "CD", ("mine",), "artisanal mining cooperative, Haut-Katanga"),
    Actor("nordic-recycling", "Nordic Battery Recycling AB", "SE", ("recycler",), "black-mass plant for end-of-life EV batteries"),
    Actor("lakeside-trading", "Lakeside Metals Trading SA", "CH", ("trader",), "buys hydroxide at the mine gate, blends and resells"),
    Actor("qiantang-cobalt", "Qiantang Cobalt Materials Co.", "CN", ("refiner",), "hydroxide-to-sulfate refinery, Zhejiang"),
    Actor("bothnia-refining", "Bothnia Cobalt Refining Oy", "FI", ("refiner",), "cobalt refinery, Ostrobothnia"),
    Actor("vistula-cathode", "Vistula Cathode Materials S.A.", "PL", ("cathode",), "NMC811 precursor and cathode plant"),
    Actor("alfold-cells", "Alföld Cell Works Kft.", "HU", ("cell",), "lithium-ion cell gigafactory"),
    Actor("rhine-motors", "Rhine Motors AG", "DE", ("oem",), "car maker; assembles the EV packs"),
)

SITES: tuple[SiteSpec, ...] = (
    SiteSpec("kw-west", "kolwezi-mining", "Kolwezi West concession", "CD", "Lualaba", -10.72, 25.47,
             "industrial", 24_000 * T, "large-scale mine, ~24 kt Co/yr audited"),
    SiteSpec("fg-hills", "fungurume-cobalt", "Fungurume Hills concession", "CD", "Lualaba", -10.62, 26.29,
             "industrial", 30_000 * T, "large-scale mine, ~30 kt Co/yr audited"),
    SiteSpec("lk-main", "likasi-resources", "Likasi main pit", "CD", "Haut-Katanga", -10.98, 26.73,
             "industrial", 1_200 * T, "mid-size mine, ~1.2 kt Co/yr audited"),
    SiteSpec("kasulo-asm", "kasulo-coop", "Kasulo artisanal site", "CD", "Lualaba", -10.70, 25.49,
             "artisanal", 2_000 * T, "artisanal site in Kolwezi town, ~2 kt Co/yr estimated"),
    SiteSpec("kambove-asm", "kambove-coop", "Kambove artisanal site", "CD", "Haut-Katanga", -10.87, 26.60,
             "artisanal", 800 * T, "artisanal site, ~0.8 kt Co/yr estimated"),
    SiteSpec("nbr-plant", "nordic-recycling", "Nordic black-mass plant", "SE", "Västernorrland", 62.39, 17.31,
             "recycled_post_consumer", 600 * T, "recycler of end-of-life batteries, ~0.6 kt recovered Co/yr audited"),
    SiteSpec("nbr-scrap", "nordic-recycling", "Nordic production-scrap line", "SE", "Västernorrland", 62.39, 17.31,
             "recycled_pre_consumer", 300 * T, "recycler of cell-production scrap, ~0.3 kt recovered Co/yr audited"),
)


def attestation_period(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The audited period: the calendar year around `now` (UTC)."""
    now = now or datetime.now(UTC)
    return datetime(now.year, 1, 1, tzinfo=UTC), datetime(now.year, 12, 31, 23, 59, 59, tzinfo=UTC)


def hydroxide(grams_co: int) -> str:
    return "cobalt hydroxide (dry)"


def sulfate(grams_co: int) -> str:
    return "cobalt sulfate heptahydrate"


def cathode(grams_co: int) -> str:
    return "NMC811 cathode active material"


def cells(grams_co: int) -> str:
    return f"NMC811 cells for {PACK_KWH} kWh EV packs"


def black_mass(grams_co: int) -> str:
    return "black mass from end-of-life packs"


@dataclass(frozen=True)
class Sizes:
    """How much material flows. `shipments` issuances per large mine; amounts in grams Co."""

    shipments: int
    kw_lot: int
    fg_lot: int
    lk_lot: int
    kasulo_lot: int
    kambove_lot: int
    recycled_lot: int
    packs_clean: int  # packs in the OEM's clean delivery
    packs_mixed: int  # packs in the OEM's mixed delivery
    lk_bulk: int  # the Haut-Katanga mine's earlier output this year, sold outside the demo chain
    overclaim: int  # what the Haut-Katanga mine then tries to declare: more than its capacity left


# A realistic week of deliveries: 20 t hydroxide lots (7 t Co) at the mine gate.
_FULL = Sizes(
    shipments=3,
    kw_lot=7 * T,
    fg_lot=7 * T,
    lk_lot=3_500 * KG,
    kasulo_lot=1_750 * KG,
    kambove_lot=700 * KG,
    recycled_lot=6 * T,
    packs_clean=1_000,
    packs_mixed=400,
    lk_bulk=1_150 * T,
    overclaim=300 * T,
)

SIZES = {
    "full": _FULL,
    # The same chain with one shipment per mine (the test suite runs this one): less
    # recycled material and fewer packs, every lot and the overclaim as in "full".
    "small": replace(_FULL, shipments=1, recycled_lot=2 * T, packs_clean=500, packs_mixed=200),
}

# Process yields (share of contained cobalt recovered in each step); illustrative.
REFINERY_RECOVERY = (96, 100)  # hydroxide -> sulfate
CATHODE_RECOVERY = (99, 100)  # sulfate -> NMC811
CELL_RECOVERY = (98, 100)  # cathode -> cells (coating / formation scrap)
