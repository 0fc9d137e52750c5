"""The per-class loss cap (protocol v2): loss cannot launder one origin class away.

A transformation proves, for every origin class k, q*L_k <= p*In_k with
(p, q) = LOSS_CAPS[process]. Without it a trader could merge artisanal and
industrial cobalt and declare the artisanal part as process loss: the balance
and range proofs are true for that, only the loss-cap proof is not.
"""

from __future__ import annotations

import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from test_ledger_world import AMOUNTS, NETWORK, World, base_world

from crypto.errors import ProvingError
from crypto.pedersen import Opening
from ledger import builders
from ledger.errors import Code, Rejection
from ledger.models import LOSS_CAPS
from sdk.attacks import launder_loss


@pytest.fixture
def mixed() -> World:
    """The refiner holds DIRTY (artisanal) and A2 (industrial): the forged-split setting."""
    w = base_world().fork()
    w.transfer(w.names["A2"], "refiner")
    return w


def planned(outputs: list[dict[str, int]]) -> list[builders.PlannedOutput]:
    return [builders.PlannedOutput("cobalt hydroxide", {k: Opening.fresh(v) for k, v in o.items()}) for o in outputs]


def laundered(w: World, process: str, outputs: list[dict[str, int]]):
    n, nonce = w.names, secrets.token_hex(16)
    inputs = {lot: w.openings[lot] for lot in (n["DIRTY"], n["A2"])}
    payload = launder_loss(
        NETWORK, "refiner", nonce, process=process, inputs=inputs, outputs=planned(outputs),
        owner_sealing_key=w.orgs["refiner"].sealing_public,
    )  # fmt: skip
    return w.sign(payload, "refiner", nonce)


def cap_floor(process: str, grams: int) -> int:
    """The least output that keeps the loss of `grams` of input within the cap."""
    p, q = LOSS_CAPS[process]
    return grams - grams * p // q


ART, IND = AMOUNTS["DIRTY.artisanal"], AMOUNTS["A2"]


@pytest.mark.parametrize(
    ("process", "artisanal_out"),
    [
        ("merge", 0),  # the whole artisanal input declared as loss
        ("merge", ART // 2),  # half of it
        ("merge", cap_floor("merge", ART) - 1),  # one gram beyond the cap
        ("refine", cap_floor("refine", ART) - 1),  # one gram beyond the (larger) refining cap
        ("split", ART * 9 // 10),
    ],
    ids=["all", "half", "merge-cap+1g", "refine-cap+1g", "split-10pc"],
)
def test_loss_routed_to_one_class_beyond_the_cap_is_refused(
    mixed: World, backend: str, process: str, artisanal_out: int
):
    env = laundered(mixed, process, [{"industrial": IND, "artisanal": artisanal_out}])
    with pytest.raises(Rejection) as info:
        mixed.apply(env, backend=backend)
    assert info.value.code is Code.BAD_PROOF
    assert info.value.message.startswith("loss-cap proof: the loss in some origin class exceeds")
    p, q = LOSS_CAPS[process]
    assert f"{p}/{q}" in info.value.message and process in info.value.message


def test_the_forged_split_in_two_outputs_is_refused(mixed: World, backend: str):
    """Two outputs: the 'clean' one all industrial, the artisanal tonne nowhere."""
    env = laundered(mixed, "split", [{"industrial": IND // 2}, {"industrial": IND - IND // 2}])
    with pytest.raises(Rejection, match="loss-cap proof") as info:
        mixed.apply(env, backend=backend)
    assert info.value.code is Code.BAD_PROOF


@pytest.mark.parametrize("process", sorted(LOSS_CAPS))
def test_a_loss_exactly_at_the_cap_lands(mixed: World, backend: str, process: str):
    n, nonce = mixed.names, secrets.token_hex(16)
    payload = builders.build_transform(
        NETWORK, "refiner", nonce, process=process,
        inputs={lot: mixed.openings[lot] for lot in (n["DIRTY"], n["A2"])},
        outputs=planned([{"industrial": cap_floor(process, IND), "artisanal": cap_floor(process, ART)}]),
        owner_sealing_key=mixed.orgs["refiner"].sealing_public,
    )  # fmt: skip
    effects = mixed.apply(mixed.sign(payload, "refiner", nonce), backend=backend)
    assert effects.new_lots[0].parents == [n["DIRTY"], n["A2"]]


def test_the_honest_builder_refuses_to_exceed_the_cap(mixed: World):
    n = mixed.names
    with pytest.raises(ProvingError, match="loss in class artisanal exceeds 2/100 of its input"):
        builders.build_transform(
            NETWORK, "refiner", secrets.token_hex(16), process="merge",
            inputs={lot: mixed.openings[lot] for lot in (n["DIRTY"], n["A2"])},
            outputs=planned([{"industrial": IND, "artisanal": cap_floor("merge", ART) - 1}]),
            owner_sealing_key=mixed.orgs["refiner"].sealing_public,
        )  # fmt: skip


def test_a_proof_for_one_process_does_not_verify_for_another(mixed: World):
    """The process and its cap are bound in the context: relabelling a refine as a merge fails."""
    n, nonce = mixed.names, secrets.token_hex(16)
    payload = builders.build_transform(
        NETWORK, "refiner", nonce, process="refine",
        inputs={lot: mixed.openings[lot] for lot in (n["DIRTY"], n["A2"])},
        outputs=planned([{"industrial": IND, "artisanal": ART}]),
        owner_sealing_key=mixed.orgs["refiner"].sealing_public,
    )  # fmt: skip
    relabelled = payload.model_copy(update={"process": "merge"})
    with pytest.raises(Rejection, match="balance proof") as info:
        mixed.apply(mixed.sign(relabelled, "refiner", nonce))
    assert info.value.code is Code.BAD_PROOF


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    process=hs.sampled_from(sorted(LOSS_CAPS)),
    kept=hs.lists(hs.integers(min_value=0, max_value=1000), min_size=2, max_size=2),
    parts=hs.integers(min_value=1, max_value=3),
    data=hs.data(),
)
def test_random_splits_within_the_cap_land(mixed: World, process: str, kept: list[int], parts: int, data):
    """Completeness: any loss per class within the cap, split over 1-3 outputs, is accepted."""
    w = mixed.fork()
    n = w.names
    totals = {}
    for (k, grams), permille in zip((("artisanal", ART), ("industrial", IND)), kept, strict=True):
        floor = cap_floor(process, grams)
        totals[k] = floor + (grams - floor) * permille // 1000  # between the cap and no loss at all
    outputs = [{} for _ in range(parts)]
    for k, total in totals.items():
        cuts = sorted(data.draw(hs.lists(hs.integers(0, total), min_size=parts - 1, max_size=parts - 1)))
        for out, lo, hi in zip(outputs, [0, *cuts], [*cuts, total], strict=True):
            out[k] = hi - lo
    out_ids = w.transform("refiner", [n["DIRTY"], n["A2"]], outputs, process=process)
    assert len(out_ids) == parts
