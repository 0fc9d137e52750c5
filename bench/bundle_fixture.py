"""Generate (and cache) the disclosure bundles that bench/bundle.py verifies.

A bundle of `n` events: the operator registers an auditor, a mine, a refiner
and an OEM; the auditor attests the mine's site; the mine issues one lot and
transfers it to the refiner; the refiner refines it `n - 9` times in a chain
(1 input -> 1 output + loss: a 3-point balance proof and a 64-bit range proof
over 2 values each, and a loss-cap proof); it transfers the last lot to the
OEM, which publishes a share claim (one more range proof). Every publication
goes through the real builders and rules (tests/test_ledger_world.World), so
the bundle is valid; the transformations are proved on every core (`build`).

Cached as bench/.cache/bundle-n{n}.json (ignored by git): proving costs about
0.1-0.3 s per transformation on one quiet core.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ itself must not shadow the `crypto` package (bench/crypto.py).
sys.path[:] = [str(ROOT), str(ROOT / "tests")] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from crypto.pedersen import Opening  # noqa: E402
from ledger import builders  # noqa: E402
from ledger.bundle import assemble  # noqa: E402
from ledger.models import ClaimKind, Role  # noqa: E402
from ledger.proofs import BatchCollector  # noqa: E402
from ledger.rules import apply  # noqa: E402
from ledger.statements import output_lot_ids  # noqa: E402
from ledger.view import apply_effects_to_view  # noqa: E402
from test_ledger_world import NETWORK, World  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
FIXED_EVENTS = 9  # 4 registrations, 1 attestation, 1 issue, 2 transfers, 1 claim


def build(n: int, progress=None, processes: int | None = None) -> tuple[dict, str]:
    """A valid bundle of exactly `n` events and the root public key (hex) (`build_world`)."""
    w, claim = build_world(n, progress, processes)
    bundle = assemble(w.events, claim, NETWORK)
    assert len(bundle["events"]) == n, len(bundle["events"])
    return bundle, w.root.verify_key.encode().hex()


def build_world(n: int, progress=None, processes: int | None = None) -> tuple[World, str]:
    """The test ledger (tests/test_ledger_world.World: it holds every signing key) of a
    bundle of `n` events, and the id of its claim.

    The chain's transformations are proved in `processes` worker processes (one
    per core by default): every input of a transformation's proofs - the
    openings it consumes and creates, its nonce, hence its lot ids - is chosen
    before any proof is made, so the proofs do not depend on each other. They
    are then signed and replayed in ledger order through the real rules, their
    proofs collected and verified in one batch at the end
    (`ledger.proofs.BatchCollector`)."""
    if n < FIXED_EVENTS + 1:
        raise ValueError(f"a bundle here has at least {FIXED_EVENTS + 1} events")
    w = World()
    w.register("auditor", Role.auditor)
    w.register("mine-a", Role.mine)
    refiner = w.register("refiner", Role.refiner)
    w.register("oem", Role.oem)
    w.attest("site-a", "mine-a", "industrial", capacity=10**15)
    amount = 10**12
    lot = w.issue("site-a", amount)
    w.transfer(lot, "refiner")
    plans = []  # (nonce, inputs, planned outputs, output lot id), in chain order
    for step in range(n - FIXED_EVENTS):
        amount -= 1_000 + step % 7
        nonce = secrets.token_hex(16)
        planned = [builders.PlannedOutput("cobalt sulphate", {"industrial": Opening.fresh(amount)})]
        (out,) = output_lot_ids(NETWORK, refiner.org_id, nonce, 1)
        plans.append((nonce, {lot: w.openings[lot]}, planned, out))
        w.openings[out] = dict(planned[0].openings)
        lot = out
    workers = processes or len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(builders.build_transform, NETWORK, refiner.org_id, nonce, process="refine", inputs=inputs,
                        outputs=planned, owner_sealing_key=refiner.sealing_public)  # fmt: skip
            for nonce, inputs, planned, _ in plans
        ]
        proofs = BatchCollector()
        for step, (future, (nonce, *_)) in enumerate(zip(futures, plans, strict=True)):
            envelope = w.sign(future.result(), refiner.org_id, nonce)
            effects = apply(envelope, w.view, w.policy, proofs)
            apply_effects_to_view(w.view, effects)
            w.log.append(effects)
            if progress and step % 100 == 0:
                progress(step)
    proofs.verify()
    w.transfer(lot, "oem")
    return w, w.claim(lot, ClaimKind.share_at_least, origin_class="industrial", p=99, q=100)


def load(n: int, progress=None) -> tuple[dict, str]:
    """The cached bundle of `n` events (built and cached on first use)."""
    path = CACHE / f"bundle-n{n}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data["bundle"], data["root"]
    bundle, root = build(n, progress)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"bundle": bundle, "root": root}))
    tmp.replace(path)
    return bundle, root


if __name__ == "__main__":
    for size in map(int, sys.argv[1:] or ["1000"]):
        load(size, progress=lambda s: print(f"n={size}: {s} transformations", flush=True))
        print(f"bundle-n{size} cached", flush=True)
