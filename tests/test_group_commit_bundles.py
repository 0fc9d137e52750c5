"""Disclosure bundles of events written in batches (group commit), end to end (issue 11).

Through the real app (GraphQL over ASGI, the module's store on the embedded SecantusDB):
transfers, transformations and claims are published so that each round forms ONE
transaction of several publications (`tests/test_group_commit.py::in_one_batch`: the
store's sequencer is held while they queue; asserted with `StoreStats.batch_sizes`, never
with timing). Each claim's `disclosureBundle` is then verified by the `oretrace verify` CLI
against the root key alone: VALID, anchored in the log. Then bytes of one batched event,
one inclusion proof, and the order of two events of one batch are tampered with, and each
is refused by the check and with the message that names it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger.envelope import parse_envelope
from ledger.models import RegisterLogKey
from sdk.cli import app as cli
from test_api_faults import aggregate_claim
from test_api_graphql import mutation_for
from test_group_commit import build_setup, in_one_batch, names

BUNDLE_QUERY = "query($c: ID!, $l: ID) { disclosureBundle(claimId: $c, lotId: $l) }"

runner = CliRunner()


@dataclass
class Batched:
    """The published scenario: every batch's members (event ids, in queue order), the claims."""

    batches: list[list[str]] = field(default_factory=list)
    #: shape -> (claim id, lot id or None for the set's, whether two members of one batch are in its bundle)
    claims: dict[str, tuple[str, str | None, bool]] = field(default_factory=dict)


@pytest.fixture(scope="module")
async def batched(app, store, gql, world, root_key) -> Batched:
    async def send(envelope) -> dict[str, Any]:
        body = await gql(mutation_for(envelope.payload.type), {"e": envelope.to_json()})
        assert "errors" not in body, body["errors"]
        return next(iter(body["data"].values()))

    log = store.translog
    await send(world.sign(RegisterLogKey(origin=log.origin, public_key=bytes(log.signing_key.verify_key).hex()), "operator"))
    setup = build_setup(world, "bb", mine_lots=4, trader_lots=0)
    for envelope in setup.envelopes:
        await send(envelope)
    n, refiner = names("bb"), "gc-refiner-bb"
    await send(world.register(refiner, "trader"))
    out = Batched()

    async def batch(plug, members: list) -> list[dict[str, Any]]:
        """`plug` alone, then `members` in ONE transaction, all accepted: their results."""
        before = store.stats.batch_sizes[len(members)]
        plug_result, results = await in_one_batch(store, send, plug, members)
        assert not isinstance(plug_result, BaseException), plug_result
        assert [r["eventId"] for r in results] == [m.event_id for m in members], results
        assert store.stats.batch_sizes[len(members)] == before + 1, store.stats.batch_sizes
        out.batches.append([m.event_id for m in members])
        return results

    lot = setup.mine_lots
    await batch(world.transfer(n.mine, lot[0], n.trader), [world.transfer(n.mine, x, n.trader) for x in lot[1:]])
    t0, (o0,) = world.transform(n.trader, [lot[0]])
    t1, (o1a, o1b) = world.transform(n.trader, [lot[1]], shares=[0.5, 0.5])
    t2, (o2,) = world.transform(n.trader, [lot[2]])
    t3, (o3,) = world.transform(n.trader, [lot[3]])
    await batch(t0, [t1, t2, t3])
    await batch(world.transfer(n.trader, o0, refiner), [world.transfer(n.trader, x, refiner) for x in (o1a, o2, o3)])
    r0, (p0,) = world.transform(refiner, [o0])
    r23, (p23,) = world.transform(refiner, [o2, o3], process="merge", keep=0.99)
    r1, (p1,) = world.transform(refiner, [o1a])
    await batch(r0, [r23, r1])
    excludes, excludes_id = world.claim_excludes(n.trader, o1b)
    share, _ = world.claim_share(refiner, p23, "industrial", 9, 10)
    amount = aggregate_claim(world, refiner, sorted([p1, p23]))
    excludes_p23, _ = world.claim_excludes(refiner, p23)
    share_id, amount_id, excludes_p23_id = (r["claimId"] for r in await batch(excludes, [share, amount, excludes_p23]))
    out.claims = {
        # o1b's ancestry holds one member of each of two batches (and the plug of none)
        "ancestry_excludes (alone, over batched ancestors)": (excludes_id, o1b, False),
        # p23's holds two members of each of the first three batches
        "share_at_least": (share_id, p23, True),
        "amount_in_range over a set": (amount_id, None, True),
        "ancestry_excludes (batched)": (excludes_p23_id, p23, True),
    }
    return out


def verify(path: Path, root: str) -> tuple[int, dict[str, Any]]:
    """`oretrace verify PATH --root-key ROOT --json`: (exit code, the JSON report)."""
    result = runner.invoke(cli, ["verify", str(path), "--root-key", root, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, json.loads(result.stdout)


def failed_check(report: dict[str, Any]) -> dict[str, Any]:
    assert report["ok"] is False
    return next(c for c in report["checks"] if not c["ok"])


def batched_positions(bundle: dict[str, Any], batches: list[list[str]]) -> tuple[list[int], tuple[int, int] | None]:
    """Positions in the bundle of the events written as members of a batch, and the first
    two positions (i < j) of events written in one transaction (None if no two are)."""
    ids = [parse_envelope(e).event_id for e in bundle["events"]]
    positions = [i for i, e in enumerate(ids) if any(e in b for b in batches)]
    pairs = [(i, j) for i in positions for j in positions if i < j and any(ids[i] in b and ids[j] in b for b in batches)]
    return positions, (pairs[0] if pairs else None)


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """`oretrace verify` with no trust store and no env root key: the root key comes from --root-key."""
    mp = pytest.MonkeyPatch()
    mp.delenv("ORETRACE_ROOT_PUBLIC_KEY", raising=False)
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    yield
    mp.undo()


SHAPES = [
    "ancestry_excludes (alone, over batched ancestors)",
    "share_at_least",
    "amount_in_range over a set",
    "ancestry_excludes (batched)",
]


@pytest.mark.parametrize("shape", SHAPES)
async def test_bundle_of_batched_events_verifies_and_each_tampering_is_refused(
    batched, gql, root_key, tmp_path, cli_env, shape
):
    claim_id, lot_id, has_pair = batched.claims[shape]
    body = await gql(BUNDLE_QUERY, {"c": claim_id, "l": lot_id})
    assert "errors" not in body, body
    bundle = body["data"]["disclosureBundle"]
    root = root_key.verify_key.encode().hex()
    path = tmp_path / "bundle.json"

    def run(candidate: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path.write_text(json.dumps(candidate))
        return verify(path, root)

    def refused(candidate: dict[str, Any], check_name: str) -> str:
        code, report = run(candidate)
        check = failed_check(report)
        assert code == 1 and check["name"] == check_name, report
        return check["detail"]

    code, report = run(bundle)
    assert code == 0 and report["ok"] is True, report
    assert {c["name"]: c["ok"] for c in report["checks"]}["log"] is True
    assert report["anchor"]["size"] >= len(bundle["events"])
    positions, pair = batched_positions(bundle, batched.batches)
    assert len(positions) >= 2 and (pair is not None) == has_pair, (positions, pair)

    for k in (positions[0], positions[-1]):
        # one batched event's signed bytes (its nonce): its signature no longer holds
        forged = copy.deepcopy(bundle)
        nonce = forged["events"][k]["nonce"]
        forged["events"][k]["nonce"] = ("0" if nonce[0] != "0" else "1") + nonce[1:]
        detail = refused(forged, "rules")
        assert detail.startswith(f"event {k} (") and "BAD_SIGNATURE" in detail, detail
        # one batched event's inclusion proof
        forged = copy.deepcopy(bundle)
        proof = forged["log"]["leaves"][k]["inclusion_proof"]
        assert proof, "a leaf of a tree of several leaves has a proof"
        proof[-1] = ("1" if proof[-1][0] != "1" else "2") + proof[-1][1:]
        detail = refused(forged, "log")
        assert detail.startswith(f"event {k} (") and f"is not leaf {bundle['log']['leaves'][k]['index']}" in detail

    if pair is None:
        return
    # two events of one transaction in the other order (independent: the rules alone accept
    # it), their leaves left in place, then moved with them
    i, j = pair
    forged = copy.deepcopy(bundle)
    events = forged["events"]
    events[i], events[j] = events[j], events[i]
    detail = refused(forged, "log")
    assert detail.startswith(f"event {i} (") and "is not leaf" in detail, detail
    leaves = forged["log"]["leaves"]
    leaves[i], leaves[j] = leaves[j], leaves[i]
    detail = refused(forged, "log")
    assert f"event {i + 1}: leaf index" in detail and "bundle order is log order" in detail, detail
