"""Public text is public (issue 7 point 4): product texts stating a quantity are
refused before anything is signed, and the demo's texts state none."""

from __future__ import annotations

import pytest

from sdk import demo_data as D
from sdk.public_text import quantity_in
from sdk.publisher import PublicQuantity, check_product_text

WITH_QUANTITY = [
    "cobalt hydroxide, 20.0 t at 35 % Co (dry)",
    "NMC811 cathode active material, 471.0 t (6.1 % Co)",
    "black mass (1,200 kg contained Co)",
    "sulfate 500g",
    "solution, 3.5 m3",
    "leach liquor 20 000 litres",
    "grade 21 percent",
    "concentrate 12 tonnes",
    "drums of 200 L",
    # other spellings: words, multipliers, qualifiers, trade units, grouping characters
    "hydroxide, twenty tonnes",
    "hydroxide, twenty t",
    "half a tonne of sulfate",
    "two hundred and fifty kilograms",
    "thirty-five percent Co",
    "20k t hydroxide",
    "20 metric tons",
    "20 short tons",
    "hydroxide 20 dmt",
    "4000 mtu",
    "5 cwt",
    "35 wt.% Co",
    "35 pct",
    "350 \u2030 Co",
    "3.5e4 g",
    "1,5 kg",
    "20\u00a0000\u202ft",
    "\uff12\uff10 t",
    "20 Tonnen",
]
WITHOUT_QUANTITY = [
    "cobalt hydroxide (dry)",
    "NMC811 cathode active material",
    "CoSO4*7H2O",
    "NMC811 cells for 75 kWh EV packs",
    "Co(OH)2 intermediate, lot 2026-17",
    "black mass from end-of-life packs",
    "tent fabric, often tonnage-rated",
    "ten-year offtake, one-stop logistics",
    "100 Mines Road plant, 2 mills",
    "NMC811 t-grade",
    "a dozen drums",
]


@pytest.mark.parametrize("text", WITH_QUANTITY)
def test_texts_with_a_quantity_are_refused_unless_allowed(text):
    assert quantity_in(text) is not None
    with pytest.raises(PublicQuantity, match="public"):
        check_product_text(text)
    check_product_text(text, allow_public_quantity=True)


@pytest.mark.parametrize("text", WITHOUT_QUANTITY)
def test_texts_without_a_quantity_pass(text):
    assert quantity_in(text) is None, quantity_in(text)
    check_product_text(text)


@pytest.mark.parametrize("make", [D.hydroxide, D.sulfate, D.cathode, D.cells, D.black_mass])
def test_demo_product_texts_state_no_quantity(make):
    texts = {make(grams) for grams in (1, 7_000_000, 471_000_000 * 6)}
    assert len(texts) == 1, texts  # the text does not depend on the amount
    assert quantity_in(texts.pop()) is None


async def test_publisher_refuses_before_signing(tmp_path):
    from sdk.publisher import Publisher
    from sdk.wallet import Wallet

    class NoServer:  # any call to the server would fail the test
        def __getattr__(self, name):
            raise AssertionError(f"the server was called ({name}) before the product text was checked")

    w = Wallet.generate("pt-mine", "oretrace-test", roles=["mine"])
    pub = Publisher(w, NoServer())
    with pytest.raises(PublicQuantity):
        await pub.issue(site_id="s", attestation_id="a", amount_g=5, product="hydroxide 5 t")
    with pytest.raises(PublicQuantity):
        await pub.transform_proportional("split", ["lot_x"], [("part, 40 %", 4), ("rest", 6)])
    assert w.lots == {}


async def test_site_name_and_region_are_public_text_too():
    """A capacity written into a site's name or region would undo its commitment."""
    from datetime import UTC, datetime, timedelta

    from sdk.publisher import Publisher
    from sdk.wallet import Wallet

    class NoServer:
        def __getattr__(self, name):
            raise AssertionError(f"the server was called ({name}) before the site texts were checked")

    pub = Publisher(Wallet.generate("pt-auditor", "oretrace-test", roles=["auditor"]), NoServer())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    site = dict(site_id="s", operator="o", country="CD", lat=0.0, lon=0.0, origin_class="industrial",
                valid_from=start, valid_until=start + timedelta(days=90), capacity_g=24 * 10**9)  # fmt: skip
    for name, region in (("Kolwezi West, 24 kt Co/yr", "Lualaba"), ("Kolwezi West", "Lualaba (24,000 tonnes)")):
        with pytest.raises(PublicQuantity, match="site (name|region)"):
            await pub.attest_site(name=name, region=region, **site)


@pytest.mark.parametrize("command", ["issue", "transform", "attest"])
def test_cli_says_texts_are_public_and_offers_the_override(command):
    """The refusal names --allow-public-quantity: the commands that publish text have it,
    and their help says the text is public."""
    from typer.testing import CliRunner

    from sdk.cli import app

    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "--allow-public-quantity" in text and "PUBLIC: every bundle shows it" in text
