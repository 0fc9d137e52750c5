"""SDK units without a server: wallet files, allocation, the client's error mapping."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.pedersen import Opening
from ledger.models import ORIGIN_CLASSES
from ledger.openings import lots_plaintext, seal, unseal
from sdk.client import ApiError, ApiRejection, Client
from sdk.publisher import ProvingRefused, proportional_outputs
from sdk.wallet import LotEntry, Wallet, WalletError, write_private_json


def test_wallet_roundtrip_keeps_keys_and_openings(tmp_path):
    w = Wallet.generate("acme", "net", name="ACME", roles=["mine"])
    w.add_lot(LotEntry("lot_1", {"industrial": Opening.fresh(2**64 - 1)}, "hydroxide", attestation_id="att_1", issue_seq=0))
    w.add_lot(LotEntry("lot_2", {"artisanal": Opening(0, 0), "recycled_post_consumer": Opening.fresh(5)}, "blend"))
    w.add_capacity("att_1", "site", Opening.fresh(10**12))
    path = w.save(tmp_path / "acme.json")
    again = Wallet.load(path)
    assert again.to_json() == w.to_json()
    assert again.signing_public_hex == w.signing_public_hex
    assert again.lot("lot_1").opening("industrial").value == 2**64 - 1
    assert again.cumulative_opening("att_1") == (1, w.lot("lot_1").openings["industrial"])


def test_wallet_unseals_what_is_sealed_to_it():
    w = Wallet.generate("acme", "net")
    o = Opening.fresh(1234)
    ciphertext = seal(lots_plaintext({"lot_x": {"recycled_post_consumer": o}}), w.sealing_public_hex)
    assert unseal(ciphertext, w.sealing_key)["lots"]["lot_x"]["recycled_post_consumer"]["value"] == 1234


def test_wallet_file_is_private_from_the_start(tmp_path, monkeypatch):
    seen_modes = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **k):
        fd = real_open(path, flags, mode, *a, **k)
        if flags & os.O_CREAT:
            seen_modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)
    try:
        write_private_json(tmp_path / "w.json", {"secret": 1})
    finally:
        os.umask(old)
    assert seen_modes == [0o600]  # the temporary file never had wider permissions
    assert stat.S_IMODE(os.stat(tmp_path / "w.json").st_mode) == 0o600


def test_failed_write_leaves_the_old_wallet_intact(tmp_path, monkeypatch):
    path = tmp_path / "w.json"
    write_private_json(path, {"v": 1})

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_private_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["w.json"]


def test_load_rejects_garbage(tmp_path):
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(WalletError):
        Wallet.load(tmp_path / "bad.json")
    with pytest.raises(WalletError):
        Wallet.load(tmp_path / "missing.json")


classes = st.dictionaries(st.sampled_from(ORIGIN_CLASSES), st.integers(0, 10**12), min_size=1)


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.lists(classes, min_size=1, max_size=4),
    fractions=st.lists(st.integers(0, 100), min_size=1, max_size=4),
)
def test_proportional_outputs_conserve_every_class(inputs, fractions):
    openings = [{k: Opening(v, 1) for k, v in d.items()} for d in inputs]
    available = {k: sum(d.get(k, 0) for d in inputs) for k in ORIGIN_CLASSES}
    grand = sum(available.values())
    totals = [grand * f // (100 * len(fractions)) for f in fractions]
    planned = proportional_outputs(openings, totals, [f"p{i}" for i in range(len(totals))])
    for plan, total in zip(planned, totals):
        assert sum(o.value for o in plan.openings.values()) == total
        assert all(o.value >= 0 for o in plan.openings.values())
    for k in ORIGIN_CLASSES:
        assert sum(p.openings.get(k, Opening.zero()).value for p in planned) <= available[k]


def test_proportional_outputs_refuse_to_create_cobalt():
    with pytest.raises(ProvingRefused):
        proportional_outputs([{"industrial": Opening(10, 1)}], [11], ["x"])


def _client(handler) -> Client:
    return Client("http://test/graphql", transport=httpx.MockTransport(handler))


async def test_client_maps_typed_errors_to_api_rejection():
    def handler(request):
        return httpx.Response(
            200,
            json={"data": None, "errors": [{"message": "lot x was already consumed", "extensions": {"code": "LOT_CONSUMED"}}]},
        )

    async with _client(handler) as c:
        with pytest.raises(ApiRejection) as info:
            await c.lot("x")
    assert info.value.code == "LOT_CONSUMED"
    assert info.value.ledger_code is not None and info.value.ledger_code.value == "LOT_CONSUMED"
    assert "already consumed" in info.value.message


async def test_client_maps_other_failures_to_api_error():
    async with _client(lambda r: httpx.Response(502, text="bad gateway")) as c:
        with pytest.raises(ApiError) as info:
            await c.lot("x")
        assert not isinstance(info.value, ApiRejection)

    def masked(request):
        return httpx.Response(200, json={"errors": [{"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]})

    async with _client(masked) as c:
        with pytest.raises(ApiError) as info:
            await c.lot("x")
        assert not isinstance(info.value, ApiRejection)

    def down(request):
        raise httpx.ConnectError("connection refused")

    async with _client(down) as c:
        with pytest.raises(ApiError, match="cannot reach"):
            await c.lot("x")


async def test_client_sends_envelopes_to_the_right_mutation():
    from ledger.envelope import sign
    from ledger.models import Transfer

    seen = {}

    def handler(request):
        body = json.loads(request.content)
        seen["query"], seen["variables"] = body["query"], body["variables"]
        return httpx.Response(200, json={"data": {"transferLot": {"eventId": "evt_1", "type": "transfer", "lotIds": []}}})

    w = Wallet.generate("acme", "net")
    env = sign(
        Transfer(lot_id="lot_1", to="bob", opening_sealed_to_receiver="eA=="),
        network="net", signer="acme", key_id="k1", signing_key=w.signing_key,
    )  # fmt: skip
    async with _client(handler) as c:
        r = await c.publish(env)
    assert r["eventId"] == "evt_1"
    assert "transferLot(envelope: $e)" in seen["query"]
    assert seen["variables"]["e"] == env.to_json()
