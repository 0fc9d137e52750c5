"""Reads on a large ledger: GraphQL against raw pymongo for the same documents.

    python bench/scale.py --events 100000 --json bench/results/scale.json
    python bench/scale.py --json PATH          # 10^6 events (the default)
    python bench/scale.py --build-only         # build (or find) the ledger, measure nothing

Builds a ledger in an embedded SecantusDB (127.0.0.1) kept in
bench/.cache/scale-e<events>-w<wide>-b<bundle events>-<indexes>/ (ignored by
git): `built.json` there marks a complete build (its figures and the ids the
measurements use), and later runs with the same sizes reuse the database
(`--rebuild` starts over). Then it measures, in
one run and alternating the two sides so that every ratio compares the same
machine state:

* `lot(id)` of random lots (p50, p99 of single requests);
* `lots` pages (first: 100, following `after` cursors);
* `provenance` of a deep lot (a chain of 1,000 ancestors, maxDepth 1000) and
  of a wide lot (100 parents of 100 parents each: 10,100 ancestors);
* `disclosureBundle` assembly for the share claim at the end of a real chain
  of `--bundle-events` events (bench/bundle_fixture.py).

The ledger has two parts:

1. a real one: the disclosure-bundle fixture (registrations, an attestation,
   an issuance, ~1,000 transformations, a claim) replayed through
   `ledger.rules.apply` (every proof verified) and written with
   `Store.apply_effects`, the server's own write path: the bundle assembled
   from it is a valid bundle (checked with `verify_bundle` once);
2. raw documents of the right shape, inserted with unordered bulk
   `insert_many` (`--batch` documents per call, lots then events) straight
   into the `lots` and `events` collections up to `--events` events in all,
   the store's indexes created before (`--indexes first`, the default:
   measured faster on SecantusDB, docs/scaling.md) or after: one issued
   lot and its issue event per document pair, plus the deep chain and the wide
   tree. They are NOT valid ledger events (no proofs bind them; their event
   documents carry a copy of one real issue envelope): only read paths that
   never verify them (`lot`, `lots`, `provenance`) touch them, and
   `disclosureBundle` reads only the real part (its queries go by lot id,
   attestation and organisation, all of the real part).

GraphQL requests go through the real app (`api.app.create_app` with the
store injected, its lifespan run: ingestion and transparency log started)
over httpx's in-process ASGI transport: Starlette, Strawberry, the
resolvers, DataLoaders and models, but no socket or uvicorn. "Raw" is
pymongo's async client issuing the same queries the store issues, returning
raw documents (no model validation, no GraphQL). The server's limits are
raised for the benchmark (maxDepth 1000 needs `max_provenance_depth`, the
wide lot `max_provenance_nodes` >= 10,101, and the cost budget with them),
and its request deadline (`--request-deadline`).

JSON keys (all times in milliseconds): `scale.events`, `scale.build_s`,
`scale.build.{indexes,batch,index_first_s,index_after_s,raw_events_per_s,cached}`,
`scale.real_build_s`, `scale.raw_build_s`, `scale.lots_page.graphql.error` and
`scale.lots_page.raw.once_ms` when a page misses the server's request deadline,
`scale.lot.{graphql,raw}.{p50_ms,p99_ms}`, `scale.lot.graphql.slowest_ms` (the slowest 1 %,
at least 3) with `.slowest_gc_ms` and `.slowest_log_round_ms` (how much of each of them a
cyclic collection, or a round of the app's transparency-log task, covered) and `.slowest_at_s`
(when each started, in seconds from the first request),
`scale.lots_page.{graphql,raw}.p50_ms`,
`scale.provenance_deep.{graphql,raw}.p50_ms` and `.nodes`,
`scale.provenance_wide.{graphql,raw}.p50_ms` and `.nodes`,
`scale.bundle.{graphql,raw}.p50_ms` and `.events`, a `.ratio` (graphql / raw) for
each, `scale.gc.full_collections` and `scale.gc.longest_pause_ms` (Python's
cyclic collections while measuring, in this process, which holds the app and
the harness: a pause lands on whichever request runs), and `machine.*` as in
bench/crypto.py with `other_cores_busy_during_run`
(other processes' CPU / wall; the embedded database's own CPU is not counted
as other, and is `scale.db_cpu_s`), `scale.db_start_s` (seconds until the
embedded database answered after its start, credentials included). `--mongodb-uri` measures against a real
MongoDB instead (a fresh database, dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ itself must not shadow the `api` and `crypto` packages (bench/api.py, bench/crypto.py).
sys.path[:] = [str(ROOT), str(ROOT / "tests")] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import httpx  # noqa: E402

from api.app import create_app  # noqa: E402
from api.embedded import EmbeddedDatabase  # noqa: E402
from api.settings import Limits, Settings  # noqa: E402
from api.store import REGISTRY_TYPES, AncestryLimit, Store, decode_cursor, to_doc  # noqa: E402
from ledger.bundle import verify_bundle  # noqa: E402
from ledger.envelope import parse_envelope  # noqa: E402
from ledger.models import Lot  # noqa: E402
from ledger.proofs import VerifyNow  # noqa: E402
from ledger.rules import Policy, apply  # noqa: E402
from ledger.view import MemoryView, apply_effects_to_view  # noqa: E402


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_crypto = _load("crypto")
bundle_fixture = _load("bundle_fixture")

DEEP = 1_000  # ancestors of the deep lot
WIDE = 100  # the wide lot: WIDE parents of WIDE parents each (--wide)
PAGE = 100
BATCH = 2_000  # lots (and as many events) per insert_many (--batch)
CACHE = ROOT / "bench" / ".cache"
DB_NAME = "scale"


# --------------------------------------------------------------------------- building the ledger


async def replay_bundle(store: Store, bundle: dict, root_hex: str) -> dict:
    """Write the fixture's events through the rules and `Store.apply_effects`;
    returns {lot_id, claim_id, network, issue_event} of the real part."""
    policy = Policy(network=bundle["network"], root_public_key=root_hex)
    view = MemoryView()
    for raw in bundle["events"]:
        effects = apply(parse_envelope(raw), view, policy, VerifyNow())
        apply_effects_to_view(view, effects)
        await store.apply_effects(effects)
    issue = await store.events.find_one({"type": "issue"})
    (lot_id,) = bundle["lot_ids"]  # the fixture's claim is about one lot
    return {"lot_id": lot_id, "claim_id": bundle["claim_id"], "network": bundle["network"], "issue": issue}


def _lot_template(issue_event: dict) -> dict:
    """A lot document as the store writes it (`to_doc` of a Lot record)."""
    lot = Lot(lot_id="lot_template", owner="mine-a", issuer="mine-a", commitments={"industrial": "a" * 96},
              product="ore", created_by_event=issue_event["_id"], created_at=datetime(2026, 1, 1, tzinfo=UTC),
              site_id=issue_event.get("site_id"), origin_class="industrial")  # fmt: skip
    return to_doc(lot, lot.lot_id)


async def insert_raw(
    store: Store, real: dict, events: int, first_seq: int, wide: int, batch: int = BATCH, progress=None
) -> dict:
    """Raw lots and their events up to `events` in all, written with unordered bulk
    `insert_many` of `batch` documents per collection; returns the deep and wide lot ids."""
    template = _lot_template(real["issue"])
    # without the keys that would make them members of the real issuance's capacity chain
    # (attestation_id, issuance_seq): `disclosureBundle` must read only the real part
    dropped = ("_id", "seq", "lot_ids", "log_index", "attestation_id", "issuance_seq", "site_id")
    event_template = {k: v for k, v in real["issue"].items() if k not in dropped}
    seq = first_seq
    lots: list[dict] = []
    evts: list[dict] = []
    t0 = time.perf_counter()

    async def flush() -> None:
        if lots:
            await store.lots.insert_many(lots, ordered=False)
            await store.events.insert_many(evts, ordered=False)
            lots.clear()
            evts.clear()
            written = seq - first_seq
            if progress and written % 50_000 < batch:
                progress(written, time.perf_counter() - t0)

    async def add(lot_id: str, parents: list[str]) -> None:
        nonlocal seq
        seq += 1
        event_id = f"evt_{seq:032x}"
        doc = {**template, "_id": lot_id, "lot_id": lot_id, "created_by_event": event_id, "parents": parents}
        if parents:
            doc.update(site_id=None, origin_class=None, product="refined", issuer="refiner", owner="refiner")
        lots.append(doc)
        evts.append({**event_template, "_id": event_id, "seq": seq, "lot_ids": [lot_id],
                     "type": "transform" if parents else "issue"})  # fmt: skip
        if len(lots) >= batch:
            await flush()

    # the deep chain: raw_deep_0 <- raw_deep_1 <- ... <- raw_deep_DEEP
    for i in range(DEEP + 1):
        await add(f"lot_deep_{i:05d}", [f"lot_deep_{i - 1:05d}"] if i else [])
    # the wide tree: wide * wide issued lots, wide refined parents, one root
    for i in range(wide):
        grand = [f"lot_wide_{i:03d}_{j:03d}" for j in range(wide)]
        for g in grand:
            await add(g, [])
        await add(f"lot_wide_{i:03d}", grand)
    await add("lot_wide_root", [f"lot_wide_{i:03d}" for i in range(wide)])
    # filler: issued lots
    written = seq - first_seq
    for i in range(max(0, events - first_seq - written)):
        await add(f"lot_fill_{i:08d}", [])
    await flush()
    # the store's allocator continues after the raw events (a publication into this ledger gets a fresh seq)
    await store.db.log_state.update_one({"_id": "head"}, {"$max": {"seq": seq}})
    return {"deep": f"lot_deep_{DEEP:05d}", "wide": "lot_wide_root", "raw_events": seq - first_seq}


async def build(store: Store, bundle: dict, root_hex: str, args) -> dict:
    """Write the whole ledger into an empty database; returns the build figures
    (`scale.*` keys) and the ids the measurements use (`ids`)."""
    out: dict = {}
    t0 = time.perf_counter()
    if args.indexes == "first":
        await store.ensure_indexes()
    out["scale.build.index_first_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    real = await replay_bundle(store, bundle, root_hex)
    out["scale.real_events"] = len(bundle["events"])
    out["scale.real_build_s"] = round(time.perf_counter() - t0, 1)
    print(f"real part: {len(bundle['events'])} events through the rules and the store in {out['scale.real_build_s']} s")
    t0 = time.perf_counter()
    raw = await insert_raw(
        store, real, args.events, len(bundle["events"]), args.wide, args.batch,
        progress=lambda n, s: print(f"  raw: {n} events in {s:.0f} s ({n / s:.0f}/s)", flush=True),
    )  # fmt: skip
    out["scale.raw_build_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    if args.indexes == "after":
        await store.ensure_indexes()
    out["scale.build.index_after_s"] = round(time.perf_counter() - t0, 1)
    out["scale.build.indexes"] = args.indexes
    out["scale.build.batch"] = args.batch
    out["scale.raw_events"] = raw["raw_events"]
    out["scale.build.raw_events_per_s"] = round(
        raw["raw_events"] / (out["scale.raw_build_s"] + out["scale.build.index_first_s"] + out["scale.build.index_after_s"])
    )  # fmt: skip
    print(f"raw part: {raw['raw_events']} events in {out['scale.raw_build_s']} s "
          f"(+ indexes {args.indexes}: {out['scale.build.index_first_s'] + out['scale.build.index_after_s']} s)")  # fmt: skip
    ids = {"deep": raw["deep"], "wide": raw["wide"], "lot_id": real["lot_id"], "claim_id": real["claim_id"]}
    return {"figures": out, "ids": ids}


# --------------------------------------------------------------------------- the raw side


async def raw_lot(store: Store, lot_id: str) -> dict | None:
    return await store.lots.find_one({"_id": lot_id})


async def raw_page(store: Store, after: str | None) -> list[dict]:
    query = {"_id": {"$gt": after}} if after else {}
    return await store.lots.find(query).sort("_id", 1).limit(PAGE + 1).to_list(None)


async def raw_ancestry(store: Store, lot_id: str, max_depth: int) -> dict[str, dict]:
    """The lot and its ancestors, one `$in` query per level in chunks (as `Store.provenance`)."""
    found: dict[str, dict] = {}
    frontier, depth = [lot_id], -1
    while frontier and depth < max_depth:
        level = await store.find_in(store.lots, "_id", frontier)
        found.update((d["_id"], d) for d in level)
        frontier = list(dict.fromkeys(p for d in level for p in d["parents"] if p not in found))
        depth += 1
    return found


async def raw_bundle(store: Store, lot_id: str, claim_id: str) -> list[dict]:
    """The event documents `Store.bundle_events` reads for this claim, with the same queries."""
    claim = await store.claims.find_one({"_id": claim_id})
    claim_doc = await store.events.find_one({"_id": claim["event_id"]})
    docs = {claim_doc["_id"]: claim_doc}
    ancestry = await raw_ancestry(store, lot_id, 10**9)
    lot_events = await store.find_in(store.events, "lot_ids", list(ancestry), {"type": {"$ne": "publish_claim"}})
    docs.update((d["_id"], d) for d in lot_events)
    highest: dict[str, int] = {}
    sites: set[str] = set()
    for d in lot_events:
        if d["type"] == "issue":
            highest[d["attestation_id"]] = max(highest.get(d["attestation_id"], -1), d["issuance_seq"])
            sites.add(d["site_id"])
    await store.attestations.find({"site_id": {"$in": list(sites)}}).sort([("site_id", 1), ("valid_from", 1)]).to_list(None)
    up_to = {"$lte": claim_doc["seq"]}  # no superseded attestation in this fixture
    queries = [{"site_id": {"$in": sorted(sites)}, "type": {"$in": ["attest_site", "revoke_attestation"]}, "seq": up_to}]
    queries += [{"attestation_id": a, "type": "issue", "issuance_seq": {"$lte": t}, "seq": up_to} for a, t in highest.items()]
    for chain in await asyncio.gather(*(store.events.find(q).to_list(None) for q in queries)):
        docs.update((d["_id"], d) for d in chain)
    orgs = {d["signer"] for d in docs.values()} | {d["receiver"] for d in docs.values() if d.get("receiver")}
    orgs |= {lot["owner"] for lot in ancestry.values()} | {lot["issuer"] for lot in ancestry.values()}
    registry = await store.events.find({"org_id": {"$in": sorted(orgs)}, "type": {"$in": list(REGISTRY_TYPES)}}).to_list(None)
    docs.update((d["_id"], d) for d in registry)
    docs.update((d["_id"], d) for d in await store.events.find({"type": "register_log_key"}).to_list(None))
    return sorted(docs.values(), key=lambda d: (d.get("log_index", -1), d["seq"]))


# --------------------------------------------------------------------------- measuring


async def gql(client: httpx.AsyncClient, query: str, variables: dict) -> dict:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"GraphQL failed ({response.status_code}): {json.dumps(body)[:500]}")
    return body["data"]


LOT_Q = "query($id: ID!) { lot(id: $id) { id product custodySeq createdAt parentIds commitments { originClass commitment } } }"
LOTS_Q = "query($after: String) { lots(first: 100, after: $after) { edges { node { id product } } pageInfo { endCursor hasNextPage } } }"
PROV_Q = "query($id: ID!, $d: Int!) { provenance(lotId: $id, maxDepth: $d) { nodes { id } edges { parent child } truncated depth } }"
BUNDLE_Q = "query($lot: ID!, $claim: ID!) { disclosureBundle(lotId: $lot, claimId: $claim) }"


class _GcPauses:
    """Python's cyclic collections while measuring (`gc.callbacks`): how many full
    (generation 2) collections ran and the longest pause of any collection, which
    lands on whichever request is running (`scale.gc.*`); `intervals` keeps every
    collection's (start, end) in `time.perf_counter` seconds."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._started = 0.0
        self.intervals: list[tuple[float, float]] = []

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        end = time.perf_counter()
        self.intervals.append((self._started, end))
        self.longest = max(self.longest, end - self._started)
        self.full += info["generation"] == 2

    def __enter__(self) -> _GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)

    def figures(self) -> dict:
        return {"scale.gc.full_collections": self.full, "scale.gc.longest_pause_ms": round(self.longest * 1000, 2)}


class _LogRounds:
    """When the app's transparency log ran its background rounds (`TransparencyLog.advance`,
    every `checkpoint_interval` seconds on the app's event loop): (start, end) in
    `time.perf_counter` seconds, to tell its rounds from other causes of a slow request."""

    def __init__(self, log) -> None:
        self.intervals: list[tuple[float, float]] = []
        advance = log.advance

        async def timed_advance() -> bytes:
            t0 = time.perf_counter()
            try:
                return await advance()
            finally:
                self.intervals.append((t0, time.perf_counter()))

        log.advance = timed_advance  # the instance's own attribute: `_run` calls self.advance()


def _overlap_ms(span: tuple[float, float], intervals: list[tuple[float, float]]) -> float:
    """Milliseconds of `span` covered by the union of `intervals` (log rounds may overlap:
    a bundle request runs one beside the background task's)."""
    covered, reach = 0.0, span[0]
    for a, b in sorted((max(a, span[0]), min(b, span[1])) for a, b in intervals):
        if b > reach and b > a:  # clipped to the span: an interval outside it is empty
            covered += b - max(a, reach)
            reach = b
    return round(covered * 1000, 2)


def _progress(out: dict, prefix: str) -> None:
    """Print a section's figures as soon as they are measured (a long run's partial results)."""
    print("  " + ", ".join(f"{k[len(prefix):]}={v}" for k, v in out.items() if k.startswith(prefix)), flush=True)


async def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = await fn()
    return (time.perf_counter() - t0) * 1000, result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def measure(
    store: Store, client: httpx.AsyncClient, ids: dict, lot_ids: list[str], args, pauses: _GcPauses, rounds: _LogRounds
) -> dict:
    out: dict = {}
    rng = random.Random(7)

    # lot(id): alternate GraphQL and raw on the same random ids
    g, r, spans = [], [], []
    for lot_id in rng.choices(lot_ids, k=args.lot_requests):
        t0 = time.perf_counter()
        t, data = await timed(lambda lot_id=lot_id: gql(client, LOT_Q, {"id": lot_id}))
        spans.append((t0, time.perf_counter()))
        assert data["lot"]["id"] == lot_id
        g.append(t)
        t, doc = await timed(lambda lot_id=lot_id: raw_lot(store, lot_id))
        assert doc["_id"] == lot_id
        r.append(t)
    for side, values in (("graphql", g), ("raw", r)):
        out[f"scale.lot.{side}.p50_ms"], out[f"scale.lot.{side}.p99_ms"] = pct(values, 0.5), pct(values, 0.99)
    out["scale.lot.ratio_p50"] = round(out["scale.lot.graphql.p50_ms"] / out["scale.lot.raw.p50_ms"], 2)
    # the slowest 1 % of GraphQL requests (those that make the p99), and how much of each
    # a cyclic collection or a round of the log's background task covered
    slowest = sorted(range(len(g)), key=g.__getitem__, reverse=True)[: max(3, len(g) // 100)]
    out["scale.lot.graphql.slowest_ms"] = [round(g[i], 2) for i in slowest]
    out["scale.lot.graphql.slowest_gc_ms"] = [_overlap_ms(spans[i], pauses.intervals) for i in slowest]
    out["scale.lot.graphql.slowest_log_round_ms"] = [_overlap_ms(spans[i], rounds.intervals) for i in slowest]
    out["scale.lot.graphql.slowest_at_s"] = [round(spans[i][0] - spans[0][0], 2) for i in slowest]
    _progress(out, "scale.lot.")

    # lots pages: follow the cursors from the first page, both sides on the same pages
    g, r = [], []
    after: str | None = None
    for _ in range(args.pages):
        try:
            t, data = await timed(lambda after=after: gql(client, LOTS_Q, {"after": after}))
        except RuntimeError as exc:  # e.g. the request deadline passed: SERVICE_UNAVAILABLE
            out["scale.lots_page.graphql.error"] = str(exc)[:300]
            t, docs = await timed(lambda after=after: raw_page(store, decode_cursor(after) if after else None))
            out["scale.lots_page.raw.once_ms"] = round(t, 1)  # without a deadline, for the record
            break
        g.append(t)
        t, docs = await timed(lambda after=after: raw_page(store, decode_cursor(after) if after else None))
        r.append(t)
        assert [d["_id"] for d in docs[:PAGE]] == [e["node"]["id"] for e in data["lots"]["edges"]]
        after = data["lots"]["pageInfo"]["endCursor"]
    if g:
        for side, values in (("graphql", g), ("raw", r)):
            out[f"scale.lots_page.{side}.p50_ms"], out[f"scale.lots_page.{side}.p99_ms"] = pct(values, 0.5), pct(values, 0.99)
        out["scale.lots_page.ratio_p50"] = round(out["scale.lots_page.graphql.p50_ms"] / out["scale.lots_page.raw.p50_ms"], 2)

    _progress(out, "scale.lots_page.")
    await measure_provenance(store, client, out, "provenance_deep", ids["deep"], DEEP, args.reps)
    # disclosureBundle assembly
    g, r = [], []
    for _ in range(args.reps):
        t, data = await timed(lambda: gql(client, BUNDLE_Q, {"lot": ids["lot_id"], "claim": ids["claim_id"]}))
        g.append(t)
        bundle = data["disclosureBundle"]
        t, docs = await timed(lambda: raw_bundle(store, ids["lot_id"], ids["claim_id"]))
        r.append(t)
        assert [d["envelope"] for d in docs] == bundle["events"]
    out["scale.bundle.events"] = len(bundle["events"])
    out["scale.bundle.graphql.p50_ms"] = round(statistics.median(g), 1)
    out["scale.bundle.raw.p50_ms"] = round(statistics.median(r), 1)
    out["scale.bundle.ratio"] = round(statistics.median(g) / statistics.median(r), 2)
    _progress(out, "scale.bundle.")
    if not args.no_wide:  # last: on the embedded database its `$in` of 10,000 ids is the slowest read by far
        await measure_provenance(store, client, out, "provenance_wide", ids["wide"], 2, args.reps)
    return out, bundle


async def measure_provenance(store: Store, client, out: dict, name: str, lot_id: str, depth: int, reps: int) -> None:
    """`provenance(lotId, maxDepth)` over GraphQL against the same walk in raw pymongo, alternated."""
    g, r = [], []
    for _ in range(reps):
        t, data = await timed(lambda: gql(client, PROV_Q, {"id": lot_id, "d": depth}))
        g.append(t)
        nodes = len(data["provenance"]["nodes"])
        assert not data["provenance"]["truncated"], name
        t, found = await timed(lambda: raw_ancestry(store, lot_id, depth))
        r.append(t)
        assert len(found) == nodes, (name, len(found), nodes)
    out[f"scale.{name}.nodes"] = nodes
    out[f"scale.{name}.graphql.p50_ms"] = round(statistics.median(g), 1)
    out[f"scale.{name}.raw.p50_ms"] = round(statistics.median(r), 1)
    out[f"scale.{name}.ratio"] = round(statistics.median(g) / statistics.median(r), 2)
    _progress(out, f"scale.{name}.")


def _process_cpu_s(pid: int | None) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


def cache_dir(args) -> Path:
    """Where the built ledger of these sizes is kept between runs (ignored by git)."""
    return args.cache / f"scale-e{args.events}-w{args.wide}-b{args.bundle_events}-{args.indexes}"


async def run(args) -> dict:
    out = bench_crypto.machine_info()
    bundle, root_hex = bundle_fixture.load(args.bundle_events, progress=lambda s: print(f"  fixture: {s}", flush=True))
    if args.mongodb_uri:  # a fresh database, dropped at the end
        where, db, uri, name = Path(tempfile.mkdtemp(prefix="oretrace-scale-")), None, args.mongodb_uri, f"scale_{os.getpid()}"
    else:  # the embedded database in the cache directory, reused if it was built completely
        where, name = cache_dir(args), DB_NAME
        if args.rebuild or not (where / "built.json").exists():
            shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True, exist_ok=True)
        db = EmbeddedDatabase(where / "db", host="127.0.0.1", port=args.db_port, startup_timeout=args.db_startup_timeout)
        t0 = time.perf_counter()
        uri = await db.astart()
        out["scale.db_start_s"] = round(time.perf_counter() - t0, 1)  # until it answers: grows with the ledger
    # the real chain is `--bundle-events` levels deep: its disclosure bundle's walk must reach its root
    limit = AncestryLimit(max_depth=max(AncestryLimit.max_depth, args.bundle_events + 16))
    store = await Store.connect(uri, name, ancestry_limit=limit)
    try:
        cached = (where / "built.json").exists()
        if cached:
            built = json.loads((where / "built.json").read_text())
            print(f"reusing the ledger built in {where}", flush=True)
            await store.ensure_indexes()  # idempotent: an index added to the store since the build
        else:
            t0 = time.perf_counter()
            built = await build(store, bundle, root_hex, args)
            built["figures"]["scale.build_s"] = round(time.perf_counter() - t0, 1)
            if db is not None:
                (where / "built.json").write_text(json.dumps(built, indent=2, sort_keys=True) + "\n")
        out.update(built["figures"])
        out["scale.build.cached"] = cached  # the build figures are then those of the run that built it
        out["scale.events"] = await store.events.estimated_document_count()
        out["scale.lots"] = await store.lots.estimated_document_count()
        print(f"ledger of {out['scale.events']} events, {out['scale.lots']} lots", flush=True)
        if args.build_only:
            return out
        settings = Settings(
            database=name, data_dir=where / "app", network=bundle["network"], root_public_key=root_hex,
            limits=Limits(max_provenance_depth=DEEP, max_provenance_nodes=max(DEEP, args.wide**2 + args.wide) + 1,
                          max_query_cost=10**6, heavy_query_cost=10**6),
            request_deadline_seconds=args.request_deadline,
        )  # fmt: skip
        app = create_app(settings, store=store)
        rng = random.Random(11)
        lot_ids = [d["_id"] async for d in store.lots.find({}, {"_id": 1}).limit(200_000)]
        lot_ids = rng.sample(lot_ids, min(len(lot_ids), 10 * args.lot_requests))
        ids = built["ids"]
        print("starting the app", flush=True)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scale") as client:
                await gql(client, LOT_Q, {"id": lot_ids[0]})  # warm-up
                pauses, rounds = _GcPauses(), _LogRounds(store.translog)
                busy0, own0, db0 = bench_crypto._cpu_busy_seconds(), time.process_time(), _process_cpu_s(db and db.pid)
                t0 = time.perf_counter()
                with pauses:
                    results, bundle_out = await measure(store, client, ids, lot_ids, args, pauses, rounds)
                wall = time.perf_counter() - t0
                out.update(pauses.figures())
                busy1, own1, db1 = bench_crypto._cpu_busy_seconds(), time.process_time(), _process_cpu_s(db and db.pid)
        out.update(results)
        report = verify_bundle(bundle_out, root_hex)
        out["scale.bundle.verifies"] = report.ok
        out["scale.measure_wall_s"] = round(wall, 1)
        out["scale.db_cpu_s"] = round(db1 - db0, 1)
        if busy0 is not None and busy1 is not None:
            out["machine.other_cores_busy_during_run"] = round(max(0.0, (busy1 - busy0) - (own1 - own0) - (db1 - db0)) / wall, 2)
        out["machine.loadavg_1m_at_end"] = os.getloadavg()[0]
    finally:
        if db is None:
            await store.drop()
        await store.close()
        if db is not None:
            await db.astop()
        else:
            shutil.rmtree(where, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10**6, help="events in the ledger (default 10^6)")
    ap.add_argument("--bundle-events", type=int, default=1000, help="events of the real chain (bench/bundle_fixture.py)")
    ap.add_argument("--lot-requests", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=3,
                    help="lots pages to follow from the first (default 3: on the embedded database each page of a "
                         "10^6-lot ledger scans and sorts the whole collection, 40-80 s a side, docs/scaling.md)")
    ap.add_argument("--wide", type=int, default=WIDE, help=f"parents (and grandparents each) of the wide lot (default {WIDE})")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of provenance and bundle")
    ap.add_argument("--no-wide", action="store_true", help="skip the wide lot's provenance (measured last)")
    ap.add_argument("--batch", type=int, default=BATCH, help=f"documents per insert_many (default {BATCH})")
    ap.add_argument("--indexes", choices=("first", "after"), default="first",
                    help="create the store's indexes before the bulk inserts (default: measured faster) or after")
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"where built ledgers are kept (default {CACHE})")
    ap.add_argument("--rebuild", action="store_true", help="build the ledger again even if it is cached")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the ledger, measure nothing")
    ap.add_argument("--db-port", type=int, help="port of the embedded database (127.0.0.1)")
    ap.add_argument("--request-deadline", type=float, default=120.0,
                    help="the server's request deadline (default 120 s; the server's own default, 10 s, "
                         "refuses the wide lot's provenance on the embedded database at 10^6 events)")
    ap.add_argument("--db-startup-timeout", type=float, default=900.0,
                    help="seconds the embedded database may take to answer (41 s measured at 10^6 events)")
    ap.add_argument("--mongodb-uri", help="use this MongoDB (a fresh database, dropped at the end) instead of the embedded one")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    args = ap.parse_args()
    out = asyncio.run(run(args))
    text = json.dumps(out, indent=2, sort_keys=True)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
