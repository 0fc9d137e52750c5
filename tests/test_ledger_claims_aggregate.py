"""Aggregate claims: one claim over a set of lots its signer holds or consumed (issue 9).

The shared chain (tests/test_ledger_world.py): the refiner consumed A1 + R1 into
CLEAN (sold to the OEM) and B1 into DIRTY (still held). So the refiner may claim
over {A1, R1, B1} (consumed), {DIRTY} (held), or any mix none of whose lots is
upstream of another; never over CLEAN (sold), A2 (never held) or DIRTY with B1
(B1 is DIRTY's parent: its cobalt would count twice).
"""

from __future__ import annotations

import functools
import json
import math
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from test_ledger_bundle import required_events
from test_ledger_world import AMOUNTS, NETWORK, World, base_world, refused
from typer.testing import CliRunner

from crypto.errors import ProvingError
from crypto.pedersen import Opening
from crypto.transcript import Transcript
from ledger import builders
from ledger import statements as st
from ledger.bundle import assemble, verify_bundle
from ledger.envelope import MalformedEnvelope, parse_envelope, sign
from ledger.errors import Code, Rejection
from ledger.models import MAX_CLAIM_LOTS, ClaimKind, PublishClaim, Role

#: The refiner's set of three: A1 and R1 (consumed into CLEAN), DIRTY (held; from B1).
SET_GRAMS = AMOUNTS["A1"] + AMOUNTS["R1"] + AMOUNTS["DIRTY.artisanal"]
RECYCLED_PERMILLE = 1000 * AMOUNTS["R1"] / SET_GRAMS  # 191.0...


@pytest.fixture
def w() -> World:
    return base_world().fork()


def lots(w: World, *names: str) -> list[str]:
    return [w.names[n] for n in names]


def claim_envelope(w: World, signer: str, lot_ids: list[str], nonce: str | None = None, **params):
    """The honest builder's claim (the set sorted by it), signed by `signer`."""
    nonce = nonce or secrets.token_hex(16)
    openings = {i: w.openings[i] for i in lot_ids}
    payload = builders.build_claim(NETWORK, signer, nonce, lot_ids=lot_ids, openings=openings, **params)
    return w.sign(payload, signer, nonce)


def resigned(w: World, envelope, **update):
    """The envelope's payload with `update`, signed again by its signer (same nonce): only the proof can object."""
    return w.sign(envelope.payload.model_copy(update=update), envelope.signer, envelope.nonce)


# --------------------------------------------------------------------------- completeness on the shared chain


@pytest.mark.parametrize(
    ("names", "params"),
    [
        (("A1", "R1", "DIRTY"), dict(kind=ClaimKind.share_in_range, origin_class="recycled", p=190, p_max=192, q=1000)),
        (("A1", "R1", "DIRTY"), dict(kind=ClaimKind.amount_in_range, low=SET_GRAMS, high=SET_GRAMS)),
        (("A1", "B1", "R1"), dict(kind=ClaimKind.share_at_least, origin_class="artisanal", p=29, q=100)),
        (("A1", "R1"), dict(kind=ClaimKind.share_at_most, origin_class="industrial", p=73, q=100)),
        (("A1", "R1"), dict(kind=ClaimKind.ancestry_excludes, origin_class="artisanal")),
    ],
    ids=["share-in-range", "amount-exact", "at-least", "at-most", "excludes"],
)
def test_an_aggregate_over_held_and_consumed_lots_lands(w: World, backend: str, names, params):
    env = claim_envelope(w, "refiner", lots(w, *names), **params)
    claim = w.apply(env, backend=backend).claims[0]
    assert claim.lot_ids == sorted(lots(w, *names)) == env.payload.lot_ids
    assert claim.owner == "refiner"


def test_the_builder_sorts_the_set_and_refuses_a_lot_twice(w: World):
    a1, r1 = lots(w, "A1", "R1")
    env = claim_envelope(w, "refiner", [max(a1, r1), min(a1, r1)], kind=ClaimKind.ancestry_excludes,
                         origin_class="artisanal")  # fmt: skip
    assert env.payload.lot_ids == sorted([a1, r1])
    for bad in ([a1, a1], [], [f"lot{i:03d}" for i in range(MAX_CLAIM_LOTS + 1)]):
        with pytest.raises(ProvingError):
            builders.build_claim(NETWORK, "refiner", "n", lot_ids=bad, kind=ClaimKind.ancestry_excludes,
                                 origin_class="artisanal")  # fmt: skip


def test_excludes_over_a_set_names_the_tainted_lot(w: World):
    env = claim_envelope(w, "refiner", lots(w, "A1", "DIRTY"), kind=ClaimKind.ancestry_excludes,
                         origin_class="artisanal")  # fmt: skip
    refused(w, env, Code.CLAIM_DOES_NOT_HOLD, f"a lot of the set descends from lot {w.names['B1']}",
            "artisanal site site-b")  # fmt: skip
    env = claim_envelope(w, "refiner", lots(w, "A1", "B1"), kind=ClaimKind.ancestry_excludes, origin_class="artisanal")
    refused(w, env, Code.CLAIM_DOES_NOT_HOLD, f"lot {w.names['B1']} was issued at artisanal site site-b")


# --------------------------------------------------------------------------- who may claim


@pytest.mark.parametrize(
    ("signer", "names", "fragment"),
    [
        ("oem", ("CLEAN", "A2"), "{A2} is held by mine-a, not oem"),  # never held by the claimant
        ("refiner", ("DIRTY", "A2"), "{A2} is held by mine-a, not refiner"),  # held by another now, never before
        ("refiner", ("CLEAN", "DIRTY"), "{CLEAN} is held by oem, not refiner"),  # held before, sold since
        ("mine-a", ("A1", "A2"), "{A1} was consumed while held by refiner, not mine-a"),  # sold, then consumed
    ],
    ids=["never-held", "someone-elses", "sold", "consumed-by-another"],
)
def test_a_lot_the_claimant_neither_holds_nor_consumed_is_refused(w: World, backend: str, signer, names, fragment):
    ids = lots(w, *names)
    for kind, params in ((ClaimKind.ancestry_excludes, dict(origin_class="artisanal")),
                         (ClaimKind.amount_in_range, dict(low=0, high=10**12, proof="00"))):  # fmt: skip
        env = w.sign(PublishClaim(lot_ids=sorted(ids), kind=kind, **params), signer)
        refused(w, env, Code.NOT_OWNER, fragment.format(**w.names), backend=backend)


def test_an_unknown_lot_is_not_found(w: World):
    env = w.sign(PublishClaim(lot_ids=sorted([w.names["DIRTY"], "lot_nowhere"]), kind="ancestry_excludes",
                              origin_class="artisanal"), "refiner")  # fmt: skip
    refused(w, env, Code.LOT_NOT_FOUND, "lot_nowhere")


# --------------------------------------------------------------------------- no double counting


def test_a_lot_with_its_parent_or_grandparent_is_refused(w: World, backend: str):
    (dirty2,) = w.transform("refiner", [w.names["DIRTY"]], [{"artisanal": 69_000_000}], process="split")
    for names, ancestor, child in (
        ([w.names["DIRTY"], w.names["B1"]], w.names["B1"], w.names["DIRTY"]),  # parent
        ([dirty2, w.names["B1"]], w.names["B1"], dirty2),  # grandparent
        ([dirty2, w.names["DIRTY"], w.names["A1"]], w.names["DIRTY"], dirty2),  # parent, among others
    ):
        for params in (dict(kind=ClaimKind.share_at_least, origin_class="artisanal", p=1, q=2),
                       dict(kind=ClaimKind.ancestry_excludes, origin_class="recycled")):  # fmt: skip
            env = claim_envelope(w, "refiner", names, **params)  # the proof is true for the inflated sums
            refused(w, env, Code.OVERLAPPING_LOTS, f"lot {ancestor} is an ancestor of lot {child}", backend=backend)


def test_the_offline_verifier_refuses_an_overlapping_set(w: World):
    """A bundle carrying an overlapping claim (as if a server had accepted it) fails the replay."""
    env = claim_envelope(w, "refiner", lots(w, "DIRTY", "B1"), kind=ClaimKind.share_at_least,
                         origin_class="artisanal", p=1, q=2)  # fmt: skip
    claim_id = st.claim_id(NETWORK, "refiner", env.nonce)
    bundle = assemble([*w.events, env], claim_id, NETWORK)
    report = verify_bundle(bundle, w.policy.root_public_key)
    assert not report.ok and report.failed().name == "rules", report.summary
    assert "OVERLAPPING_LOTS" in report.summary and w.names["B1"] in report.summary


# --------------------------------------------------------------------------- malformed sets


def test_an_unsorted_or_repeated_set_is_malformed(w: World):
    a1, r1, dirty = sorted(lots(w, "A1", "R1", "DIRTY"))
    for bad in ([r1, a1], [a1, a1], [a1, dirty, r1], [dirty, a1, r1], [a1, r1, r1]):
        if bad == sorted(set(bad)):
            continue
        env = w.sign(PublishClaim(lot_ids=bad, kind="ancestry_excludes", origin_class="artisanal"), "refiner")
        refused(w, env, Code.MALFORMED, "lot_ids: must be strictly ascending")


@pytest.mark.parametrize("count", [0, MAX_CLAIM_LOTS + 1, 100])
def test_an_empty_or_oversized_set_is_malformed(w: World, count: int):
    ids = sorted(f"lot{i:03d}" for i in range(count))
    payload = PublishClaim.model_construct(type="publish_claim", lot_ids=ids, kind=ClaimKind.ancestry_excludes,
                                           origin_class="artisanal", p=None, p_max=None, q=None, low=None,
                                           high=None, proof=None)  # fmt: skip
    raw = sign(payload, network=NETWORK, signer="refiner", key_id="k1", signing_key=w.orgs["refiner"].signing,
               nonce=secrets.token_hex(16), timestamp=w.tick()).to_json()  # fmt: skip
    with pytest.raises(MalformedEnvelope, match="lot_ids"):
        parse_envelope(raw)


# --------------------------------------------------------------------------- soundness of the statement


@pytest.mark.parametrize(
    ("p", "p_max"), [(192, 200), (250, 300), (180, 190), (0, 100)], ids=["above-lower", "far-above", "below", "far-below"]
)
def test_an_aggregate_share_outside_either_bound_is_refused(w: World, backend: str, p: int, p_max: int):
    assert not p <= RECYCLED_PERMILLE <= p_max
    ids = lots(w, "A1", "R1", "DIRTY")
    with pytest.raises(ProvingError, match="the claim is false"):
        claim_envelope(w, "refiner", ids, kind=ClaimKind.share_in_range, origin_class="recycled", p=p, p_max=p_max,
                       q=1000)  # fmt: skip
    honest = claim_envelope(w, "refiner", ids, kind=ClaimKind.share_in_range, origin_class="recycled", p=190,
                            p_max=192, q=1000)  # fmt: skip
    refused(w, resigned(w, honest, p=p, p_max=p_max), Code.BAD_PROOF, "claim proof", "aggregate of the 3 lots",
            backend=backend)  # fmt: skip


@pytest.mark.parametrize("above", [1, 1_000, SET_GRAMS])
def test_an_amount_above_the_true_sum_is_refused(w: World, backend: str, above: int):
    ids = lots(w, "A1", "R1", "DIRTY")
    with pytest.raises(ProvingError):
        claim_envelope(w, "refiner", ids, kind=ClaimKind.amount_in_range, low=SET_GRAMS + above,
                       high=SET_GRAMS + 2 * above)  # fmt: skip
    honest = claim_envelope(w, "refiner", ids, kind=ClaimKind.amount_in_range, low=SET_GRAMS, high=SET_GRAMS)
    lie = resigned(w, honest, low=SET_GRAMS + above, high=SET_GRAMS + 2 * above)
    refused(w, lie, Code.BAD_PROOF, "claim proof", backend=backend)
    # nor does one lot's amount pass for the set's (the sum is what is proven)
    single = claim_envelope(w, "refiner", lots(w, "A1"), kind=ClaimKind.amount_in_range, low=AMOUNTS["A1"],
                            high=SET_GRAMS + above)  # fmt: skip
    refused(w, resigned(w, single, lot_ids=sorted(ids)), Code.BAD_PROOF, "claim proof", backend=backend)


def test_a_proof_for_one_set_does_not_verify_for_another(w: World, backend: str):
    """Transcript binding: the same statement values, another set (a subset, a superset, another lot)."""
    a1, r1, b1, dirty = lots(w, "A1", "R1", "B1", "DIRTY")
    honest = claim_envelope(w, "refiner", [a1, r1], kind=ClaimKind.share_at_most, origin_class="recycled",
                            p=1, q=2)  # fmt: skip
    for other in ([a1], [r1], [a1, r1, dirty], [a1, dirty], [r1, b1], [a1, b1]):
        refused(w, resigned(w, honest, lot_ids=sorted(other)), Code.BAD_PROOF, "claim proof", backend=backend)


def test_the_transcript_binds_the_set_length_prefixed():
    def challenge(lot_ids):
        t = st.claim_transcript(NETWORK, "s", "clm", lot_ids, ClaimKind.share_at_least, {"p": 1})
        return t.challenge_scalar(b"x")

    sets = [["ab"], ["a", "b"], ["a"], ["b", "a"], ["a", "b", "c"], ["a", "bc"]]
    assert len({challenge(s) for s in sets}) == len(sets)
    t = Transcript(st.CLAIM_LABELS[ClaimKind.share_at_least], b"{}")
    assert t.challenge_scalar(b"x") not in {challenge(s) for s in sets}


# --------------------------------------------------------------------------- bundles


@functools.cache
def aggregate_world() -> tuple[World, str]:
    """The chain plus the refiner's aggregate claim over {A1, R1, DIRTY}."""
    w = base_world().fork()
    claim_id = w.claim(lots(w, "A1", "R1", "DIRTY"), ClaimKind.share_in_range, origin_class="recycled", p=190,
                       p_max=192, q=1000)  # fmt: skip
    return w, claim_id


@pytest.fixture(scope="module")
def aggregate_bundle() -> dict:
    w, claim_id = aggregate_world()
    return assemble(required_events(w, claim_id), claim_id, NETWORK)


def test_an_aggregate_bundle_verifies_and_reports_the_set(aggregate_bundle: dict):
    w, claim_id = aggregate_world()
    ids = sorted(lots(w, "A1", "R1", "DIRTY"))
    assert aggregate_bundle["lot_ids"] == ids and "lot_id" not in aggregate_bundle
    report = verify_bundle(aggregate_bundle, w.policy.root_public_key)
    assert report.ok, report.summary
    assert f"for 3 lots: {', '.join(ids)}" in report.summary
    assert report.meaning["model"] == "mass balance"
    assert [lot["lot_id"] for lot in report.meaning["lots"]] == ids
    assert report.meaning["mass_balance"] == {
        "lots": 3, "upstream_lots": 1, "issued_lots": 3, "transformations": 1,
        "origin_classes": ["artisanal", "industrial", "recycled_post_consumer"],
    }  # fmt: skip
    # the union of the ancestries, each event once; the transformation that consumed A1 and R1
    # (into CLEAN, outside the set's ancestry) is not needed
    events = [parse_envelope(e) for e in aggregate_bundle["events"]]
    assert len({e.event_id for e in events}) == len(events)
    assert [e.payload.type for e in events].count("transform") == 1


def test_every_event_of_an_aggregate_bundle_is_needed(aggregate_bundle: dict):
    w, _ = aggregate_world()
    root = w.policy.root_public_key
    for i, event in enumerate(aggregate_bundle["events"][:-1]):
        if event["payload"]["type"] == "register_log_key":
            continue
        cut = {**aggregate_bundle, "events": aggregate_bundle["events"][:i] + aggregate_bundle["events"][i + 1 :]}
        assert not verify_bundle(cut, root).ok, (i, event["payload"]["type"])


def test_a_bundle_missing_one_lots_ancestry_is_refused(aggregate_bundle: dict):
    w, _ = aggregate_world()
    for name in ("R1", "DIRTY"):  # an issuance; a transformation
        creating = w.view.lot(w.names[name]).created_by_event
        events = [e for e in aggregate_bundle["events"] if parse_envelope(e).event_id != creating]
        report = verify_bundle({**aggregate_bundle, "events": events}, w.policy.root_public_key)
        assert not report.ok, name
        assert report.failed().name == "rules" and "LOT_NOT_FOUND" in report.summary, report.summary
        assert w.names[name] in report.summary, report.summary


def test_the_consumption_a_bundle_leaves_out_cannot_change_the_verdict(aggregate_bundle: dict):
    """A1 and R1 are claimed as consumed; the transformation that consumed them (into CLEAN) is
    left out of the bundle, so the replay shows them unconsumed. Put back at its ledger position
    it changes nothing: eligibility reads the owner (frozen at consumption), the sums read the
    lots' own commitments, and no lot of the set can be downstream of it (that lot's ancestry,
    hence the bundle, would hold it, and the set be OVERLAPPING_LOTS)."""
    w, claim_id = aggregate_world()
    consumer = w.view.lot(w.names["A1"]).consumed_by_event
    assert consumer is not None and consumer == w.view.lot(w.names["R1"]).consumed_by_event
    carried = {parse_envelope(e).event_id for e in aggregate_bundle["events"]}
    assert consumer not in carried
    root = w.policy.root_public_key
    without = verify_bundle(aggregate_bundle, root)
    with_it = verify_bundle(
        assemble([e.envelope for e in w.log if e.envelope.event_id in carried | {consumer}], claim_id, NETWORK), root
    )
    assert without.ok and with_it.ok, with_it.summary
    assert with_it.events == without.events + 1
    assert (with_it.claim, with_it.meaning) == (without.claim, without.meaning)


def test_the_same_cobalt_in_two_claims_is_two_true_statements(w: World, backend: str):
    """Claims are statements about their own set, not exclusive allocations (docs/protocol.md,
    "Claims are statements"): the refiner's claim over the lots it consumed and the OEM's over
    CLEAN, made from them, both land, each exact for its own lots; one set holding both a
    consumed lot and its output is refused. Summing across claims is the reader's double count."""
    a1, r1, clean = lots(w, "A1", "R1", "CLEAN")
    inputs = AMOUNTS["A1"] + AMOUNTS["R1"]
    refiner = claim_envelope(w, "refiner", [a1, r1], kind=ClaimKind.amount_in_range, low=inputs, high=inputs)
    assert w.apply(refiner, backend=backend).claims[0].lot_ids == sorted([a1, r1])
    output = sum(opening.value for opening in w.openings[clean].values())
    assert 0 < output < inputs
    oem = claim_envelope(w, "oem", [clean], kind=ClaimKind.amount_in_range, low=output, high=output)
    assert w.apply(oem, backend=backend).claims[0].owner == "oem"
    with pytest.raises(ProvingError):  # the OEM cannot state the inputs' amount (before the loss) for CLEAN
        claim_envelope(w, "oem", [clean], kind=ClaimKind.amount_in_range, low=inputs, high=inputs)


@pytest.mark.parametrize("edit", ["drop", "add", "swap", "reorder"])
def test_a_bundle_whose_lot_ids_were_edited_is_refused(aggregate_bundle: dict, edit: str):
    w, _ = aggregate_world()
    ids = list(aggregate_bundle["lot_ids"])
    edited = {
        "drop": ids[:2], "add": sorted([*ids, w.names["B1"]]), "swap": sorted([*ids[:2], w.names["CLEAN"]]),
        "reorder": list(reversed(ids)),
    }[edit]  # fmt: skip
    report = verify_bundle({**aggregate_bundle, "lot_ids": edited}, w.policy.root_public_key)
    assert not report.ok and report.failed().name == "claim", report.summary
    assert "the bundle names" in report.summary


def test_verify_cli_prints_the_set_and_exits_1_on_an_edited_bundle(aggregate_bundle: dict, tmp_path, monkeypatch):
    from sdk.cli import app

    w, _ = aggregate_world()
    root = w.policy.root_public_key
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    runner = CliRunner()
    good = tmp_path / "aggregate.json"
    good.write_text(json.dumps(aggregate_bundle))
    r = runner.invoke(app, ["verify", str(good), "--root-key", root, "--allow-unanchored"], terminal_width=200)
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "for 3 lots:" in flat and all(i in flat for i in aggregate_bundle["lot_ids"])
    assert "Mass balance over the set: 3 lot(s)" in flat
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps({**aggregate_bundle, "lot_ids": aggregate_bundle["lot_ids"][:1]}))
    r = runner.invoke(app, ["verify", str(bad), "--root-key", root, "--allow-unanchored"], terminal_width=200)
    assert r.exit_code == 1 and "NOT PROVEN" in r.output, r.output
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps({**aggregate_bundle, "events": aggregate_bundle["events"][1:]}))
    r = runner.invoke(app, ["verify", str(cut), "--root-key", root, "--allow-unanchored"], terminal_width=200)
    assert r.exit_code == 1, r.output


# --------------------------------------------------------------------------- completeness (hypothesis)

CLASSES = ("industrial", "artisanal", "recycled_pre_consumer", "recycled_post_consumer")


@functools.cache
def small_world() -> World:
    """A recycler (issues and transforms) with a site of each recycled class, and a mine with an
    industrial and an artisanal site whose lots it sells to the recycler."""
    w = World()
    w.register("auditor", Role.auditor)
    w.register("mine", Role.mine)
    w.register("rec", Role.recycler)
    w.attest("s-ind", "mine", "industrial", capacity=10**15)
    w.attest("s-asm", "mine", "artisanal", capacity=10**15)
    w.attest("s-pre", "rec", "recycled_pre_consumer", capacity=10**15)
    w.attest("s-post", "rec", "recycled_post_consumer", capacity=10**15)
    return w


SITE_OF = {"industrial": "s-ind", "artisanal": "s-asm", "recycled_pre_consumer": "s-pre",
           "recycled_post_consumer": "s-post"}  # fmt: skip


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    issued=hs.lists(hs.tuples(hs.sampled_from(CLASSES), hs.integers(1, 10**9)), min_size=2, max_size=8),
    merged=hs.integers(0, 8),
    data=hs.data(),
)
def test_random_sets_of_held_and_consumed_lots_verify(issued, merged, data):
    """Issue 2-8 lots, sell the mine's to the recycler, merge some of them; any 2-8 lots of the
    recycler none upstream of another (held, consumed, the merge output) carry true share and
    amount claims that land, and their bundles verify offline."""
    w = small_world().fork()
    held = []
    for origin_class, grams in issued:
        lot = w.issue(SITE_OF[origin_class], grams)
        if w.view.lot(lot).owner == "mine":
            w.transfer(lot, "rec")
        held.append(lot)
    consumed = held[: min(merged, len(held))]
    candidates = list(held)
    if len(consumed) >= 1:
        out_grams = {k: sum(w.openings[i].get(k, Opening.zero()).value for i in consumed) for k in CLASSES}
        (out,) = w.transform("rec", consumed, [{k: v for k, v in out_grams.items() if v}], process="merge")
        candidates.append(out)  # the merge output is a descendant of every consumed lot
    chosen = data.draw(hs.lists(hs.sampled_from(candidates), min_size=2, max_size=8, unique=True))
    if consumed and candidates[-1] in chosen:
        chosen = [c for c in chosen if c not in consumed]  # the output with its own inputs would overlap
    if len(chosen) < 2:
        chosen = [candidates[-1], held[-1]] if len(held) > len(consumed) else held[:2]
    sums = {k: sum(w.openings[i].get(k, Opening.zero()).value for i in chosen) for k in CLASSES}
    total = sum(sums.values())
    recycled = sums["recycled_pre_consumer"] + sums["recycled_post_consumer"]
    low, high = math.floor(1000 * recycled / total), math.ceil(1000 * recycled / total)
    claims = [
        w.claim(chosen, ClaimKind.share_in_range, origin_class="recycled", p=low, p_max=high, q=1000),
        w.claim(chosen, ClaimKind.amount_in_range, low=total, high=total),
    ]
    assert w.view.claims[claims[0]].lot_ids == sorted(chosen)
    report = verify_bundle(assemble(required_events(w, claims[0]), claims[0], NETWORK), w.policy.root_public_key)
    assert report.ok, report.summary
    assert report.meaning["mass_balance"]["lots"] == len(chosen)
