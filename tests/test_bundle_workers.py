"""Bundle verification gives the same verdict with 0, 1 and 2 worker processes.

Chain bundles of several sizes (bench/bundle_fixture.py: a lot refined again and
again, ending with a share claim; the benchmark's bundles in small) verify with
every worker count, the workers used from the first point on
(`ledger.proofs.WORKERS_MIN_POINTS` = 0). A bad proof, a bad signature and an
off-subgroup point, each at the first transformation, the middle one and the
last event (the claim), fail the bundle naming that event and that check.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

from test_batch_verify import _replace_point
from test_bulletproofs import _off_subgroup_encoding
from test_ledger_bundle import TAU_X_LAST_BYTE, failed, flip_byte, resigned

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZES = (11, 24)


def _fixture_module():
    path = Path(__file__).resolve().parent.parent / "bench" / "bundle_fixture.py"
    spec = importlib.util.spec_from_file_location("bench_bundle_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chains() -> dict[int, tuple]:
    """size -> (World, bundle, root key hex), proved on 2 processes."""
    from ledger.bundle import assemble

    fixture = _fixture_module()
    out = {}
    for n in SIZES:
        world, claim = fixture.build_world(n, processes=2)
        out[n] = (world, assemble(world.events, claim, fixture.NETWORK), world.policy.root_public_key)
    return out


@pytest.fixture(params=[0, 1, 2], ids=["in-process", "1-worker", "2-workers"])
def workers(request, monkeypatch) -> int:
    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", str(request.param))
    return request.param


@pytest.mark.parametrize("n", SIZES)
def test_chain_bundles_of_several_sizes_verify(chains, workers, n):
    from crypto import batch
    from ledger.bundle import verify_bundle

    _, bundle, root = chains[n]
    report = verify_bundle(bundle, root)
    assert report.ok, report.summary
    assert report.events == n and len(bundle["events"]) == n
    transforms = n - 9
    assert (report.range_proofs, report.sigma_proofs) == (2 + 2 * transforms + 1, transforms)
    proofs = next(c for c in report.checks if c.name == "proofs")
    assert "in this process alone" not in proofs.detail
    if workers:  # the pool really was used: it exists and is alive
        assert all(w.process.poll() is None for w in batch.shared_pool(workers).workers)


def _where(bundle: dict) -> dict[str, int]:
    transforms = [i for i, e in enumerate(bundle["events"]) if e["payload"]["type"] == "transform"]
    last = len(bundle["events"]) - 1
    assert bundle["events"][last]["payload"]["type"] == "publish_claim"
    return {"first": transforms[0], "middle": transforms[len(transforms) // 2], "last": last}


WHERE = ["first", "middle", "last"]


@pytest.mark.parametrize("where", WHERE)
def test_a_bad_proof_is_named_at_its_event(chains, workers, where):
    world, bundle, root = chains[SIZES[-1]]
    i = _where(bundle)[where]
    if where == "last":  # the claim's range proof: a scalar's byte
        bad = resigned(world, bundle, i, lambda p: p.update(proof=flip_byte(p["proof"], TAU_X_LAST_BYTE)))
        failed(bad, root, "proofs", f"event {i} (publish_claim", "claim proof")
    else:  # the transformation's balance proof: a scalar's last byte
        last = len(bundle["events"][i]["payload"]["balance_proof"]) // 2 - 1
        bad = resigned(world, bundle, i, lambda p: p.update(balance_proof=flip_byte(p["balance_proof"], last)))
        failed(bad, root, "proofs", f"event {i} (transform", "balance proof")


@pytest.mark.parametrize("where", WHERE)
def test_a_bad_signature_is_named_at_its_event(chains, workers, where):
    _, bundle, root = chains[SIZES[-1]]
    i = _where(bundle)[where]
    bad = copy.deepcopy(bundle)
    bad["events"][i]["signature"] = flip_byte(bad["events"][i]["signature"], 17)
    kind = "publish_claim" if where == "last" else "transform"
    failed(bad, root, "rules", f"event {i} ({kind}", "BAD_SIGNATURE")


@pytest.mark.parametrize("where", WHERE)
def test_an_off_subgroup_point_is_named_at_its_event(chains, workers, where):
    world, bundle, root = chains[SIZES[-1]]
    i = _where(bundle)[where]
    field, name = ("proof", "claim proof") if where == "last" else ("range_proof", "range proof")
    bad = resigned(world, bundle, i, lambda p: p.update({field: _replace_point(p[field], 48, _off_subgroup_encoding())}))
    kind = "publish_claim" if where == "last" else "transform"
    detail = failed(bad, root, "proofs", f"event {i} ({kind}", name).failed().detail
    assert "subgroup" in detail, detail
