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
]
WITHOUT_QUANTITY = [
    "cobalt hydroxide (dry)",
    "NMC811 cathode active material",
    "CoSO4*7H2O",
    "NMC811 cells for 75 kWh EV packs",
    "Co(OH)2 intermediate, lot 2026-17",
    "black mass from end-of-life packs",
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
