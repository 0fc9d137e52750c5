"""The demo scenario (small size) through HTTP against a real server on the embedded database.

Every expected outcome is asserted: claims that hold and verify offline, the
claim that honestly fails, the two laundering attempts (over-capacity issuance
refused by the wallet and, forged, by the API; a refiner inflating its output),
and a tampered bundle failing offline verification. The wallets' decrypted
amounts are checked against the story's numbers.
"""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from ledger.bundle import verify_bundle
from sdk import demo_data as D
from sdk.client import Client
from sdk.demo import make_wallets, run_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wallets(api_settings, root_key: SigningKey):
    return make_wallets(api_settings.network, root_seed=bytes(root_key))


@pytest.fixture(scope="module")
async def api(live_server):
    async with Client(f"{live_server}/graphql") as c:
        yield c


@pytest.fixture(scope="module")
async def result(api, wallets, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    res = await run_scenario(api, wallets, size="small", out_dir=out)
    res.out_dir = out  # type: ignore[attr-defined]
    return res


def _outcome(result, fragment: str):
    matches = [o for o in result.outcomes if fragment in o.step]
    assert len(matches) == 1, (fragment, [o.step for o in result.outcomes])
    return matches[0]


async def test_every_expected_outcome_happened(result):
    failed = [o for o in result.outcomes if not o.ok]
    assert not failed, failed
    assert result.ok
    assert len(result.outcomes) == 16
    # two forged issuances, the laundered loss, the forged refinery, the false claim, the double-counting claim
    assert result.rejected == 6


async def test_trader_cannot_launder_artisanal_cobalt_through_the_loss(result):
    o = _outcome(result, "artisanal input as process loss")
    assert o.observed.startswith("BAD_PROOF: loss-cap proof")


async def test_over_capacity_issuance_refused_by_wallet_then_by_api(result):
    honest = _outcome(result, "honest wallet")
    assert honest.observed.startswith("refused: issuing 300,000,000 g would exceed")
    smaller = _outcome(result, "forged for a smaller amount")
    assert smaller.observed.startswith("BAD_PROOF: capacity proof")
    stale = _outcome(result, "stale cumulative")
    assert stale.observed.startswith("ISSUANCE_OUT_OF_SEQUENCE")


async def test_refiner_cannot_produce_more_than_it_consumed(result):
    o = _outcome(result, "more sulfate than its input held")
    assert o.observed.startswith("BAD_PROOF: balance proof")


async def test_artisanal_claim_honestly_fails_on_mixed_batch(result):
    o = _outcome(result, "no artisanal origin' for pack batch B")
    assert o.observed.startswith("CLAIM_DOES_NOT_HOLD")
    assert "artisanal site" in o.observed


async def test_bundles_written_and_verify_offline(result, wallets):
    root = wallets["operator"].signing_public_hex
    names = sorted(b.name for b in result.bundles)
    assert names == [
        "clean-no-artisanal", "clean-post-consumer-10pct", "clean-recycled-16pct", "mixed-artisanal-max-25pct",
        "model-year-cobalt-amount", "model-year-post-consumer-10pct", "model-year-recycled-16pct",
    ]  # fmt: skip
    assert (result.out_dir / "root-key.hex").read_text().strip() == root
    import json

    for b in result.bundles:
        assert b.ok, b.summary
        bundle = json.loads(b.path.read_text())
        report = verify_bundle(bundle, root)
        assert report.ok, report.summary
        assert report.claim["lot_ids"] == b.lot_ids == sorted(b.lot_ids)
        # no amount and no blinding leaks into a bundle: only ciphertexts, commitments, proofs
        text = b.path.read_text()
        assert '"value"' not in text and '"blinding"' not in text
    statements = {b.name: b.statement for b in result.bundles}
    assert statements["clean-no-artisanal"] == "no artisanal origin anywhere upstream"
    assert statements["clean-recycled-16pct"].startswith("recycled share between 160/1000 and 169/1000")
    assert statements["clean-post-consumer-10pct"].startswith("recycled_post_consumer share >= 10/100")
    deliveries = sorted(result.ids[k] for k in ("lot_pack_clean", "lot_pack_clean_a2", "lot_pack_clean_a3"))
    for name in ("model-year-cobalt-amount", "model-year-post-consumer-10pct", "model-year-recycled-16pct"):
        b = next(b for b in result.bundles if b.name == name)
        assert b.lot_ids == deliveries, name  # an aggregate over the three clean deliveries
        assert f"for 3 lots: {', '.join(deliveries)}" in b.summary, b.summary
    assert statements["model-year-recycled-16pct"].startswith("recycled share between 160/1000 and 169/1000")
    assert statements["model-year-post-consumer-10pct"].startswith("recycled_post_consumer share >= 100/1000")
    assert statements["model-year-cobalt-amount"].startswith("contained cobalt between")
    tampered = _outcome(result, "one commitment changed")
    assert tampered.observed.startswith("INVALID")


async def test_double_counting_refused_by_wallet_then_by_api(result):
    honest = _outcome(result, "cells made from it, wallet check")
    assert honest.observed.startswith(f"refused: lot {result.ids['lot_cathode_clean']} is an ancestor of lot"), honest
    sent = _outcome(result, "the same cobalt counted twice")
    assert sent.observed.startswith("OVERLAPPING_LOTS"), sent
    assert result.ids["lot_cathode_clean"] in sent.observed and result.ids["lot_cells_clean_rest"] in sent.observed


async def test_bundle_fails_under_another_root_key(result):
    import json

    bundle = json.loads(result.bundles[0].path.read_text())
    other = SigningKey.generate().verify_key.encode().hex()
    report = verify_bundle(bundle, other)
    assert not report.ok
    assert "BAD_SIGNATURE" in report.summary


async def test_wallet_amounts_match_the_story(result, wallets):
    z = D.SIZES["small"]
    oem = wallets["rhine-motors"]
    clean = oem.lot(result.ids["lot_pack_clean"])
    mixed = oem.lot(result.ids["lot_pack_mixed"])
    assert clean.total == z.packs_clean * D.PACK_CO_G
    assert mixed.total == z.packs_mixed * D.PACK_CO_G
    a = clean.amounts()
    assert a["artisanal"] == 0
    recycled = a["recycled_pre_consumer"] + a["recycled_post_consumer"]
    assert 160 * clean.total <= 1000 * recycled <= 169 * clean.total  # the claims, in plaintext
    assert 100 * a["recycled_post_consumer"] >= 10 * clean.total and a["recycled_pre_consumer"] > 0
    # the passport's aggregate claims, in plaintext: the three clean deliveries summed
    year = [oem.lot(result.ids[k]) for k in ("lot_pack_clean", "lot_pack_clean_a2", "lot_pack_clean_a3")]
    total = sum(e.total for e in year)
    assert total == 2 * z.packs_clean * D.PACK_CO_G
    recycled = sum(e.amounts()["recycled_pre_consumer"] + e.amounts()["recycled_post_consumer"] for e in year)
    post = sum(e.amounts()["recycled_post_consumer"] for e in year)
    assert 160 * total <= 1000 * recycled <= 169 * total and 1000 * post >= 100 * total
    m = mixed.amounts()
    assert m["artisanal"] > 0 and m["recycled_pre_consumer"] == m["recycled_post_consumer"] == 0
    assert 100 * m["artisanal"] <= 25 * mixed.total
    # the forged refinery left nothing behind: the honest refinery consumed the blend once
    trader = wallets["lakeside-trading"]
    assert trader.lot(result.ids["lot_trader_blend"]).spent


async def test_provenance_of_the_batches(result, api):
    clean = await api.provenance(result.ids["lot_pack_clean"])
    assert not clean["truncated"]
    classes = {n["originClass"] for n in clean["nodes"] if n["originClass"]}
    assert classes == {"industrial", "recycled_pre_consumer", "recycled_post_consumer"}
    mixed = await api.provenance(result.ids["lot_pack_mixed"])
    classes = {n["originClass"] for n in mixed["nodes"] if n["originClass"]}
    assert classes == {"industrial", "artisanal"}
    node_ids = {n["id"] for n in mixed["nodes"]}
    assert all(e["parent"] in node_ids and e["child"] in node_ids for e in mixed["edges"])
    claims = await api.claims(result.ids["lot_pack_clean"])  # its own claims and the model-year aggregates
    assert sorted(c["kind"] for c in claims) == [
        "amount_in_range", "ancestry_excludes", "share_at_least", "share_at_least", "share_in_range", "share_in_range"
    ]  # fmt: skip
    assert sum(len(c["lotIds"]) == 3 for c in claims) == 3
    only_aggregates = await api.claims(result.ids["lot_pack_clean_a2"])
    assert len(only_aggregates) == 3 and all(result.ids["lot_pack_clean_a2"] in c["lotIds"] for c in only_aggregates)
