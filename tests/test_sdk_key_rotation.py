"""Keys from rotations, verified against the root key alone (sdk.registry).

A real server on the embedded database. The operator registers an organisation,
then rotates its signing key (with a new sealing key) and revokes the old one.
Through the honest endpoint the SDK learns the rotated keys by replaying the
organisation's root-signed registry events (`organization { registryEvents }`).
Through a lying endpoint (an httpx transport in front of the real server that
rewrites chosen answers) every way of misreporting those events is refused
with UntrustedAnswer, and a transfer to the organisation publishes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from conftest import LyingTransport, Rewrite
from crypto.pedersen import Opening
from ledger.envelope import parse_envelope, sign
from ledger.models import KeyEntry, RevokeKey, RotateKey, Transfer
from ledger.openings import lots_plaintext, seal
from sdk.client import ApiRejection, Client
from sdk.demo_data import attestation_period
from sdk.publisher import Publisher, new_nonce, sync
from sdk.registry import Registry, UntrustedAnswer
from sdk.wallet import Wallet


@pytest.fixture(scope="module")
async def net(live_server, api_settings, root_key: SigningKey, tmp_path_factory):
    """kr-trader registered with key k1, then rotated to k2 with a new sealing key, k1 revoked;
    kr-mine holds two issued lots; kr-other has one rotation of its own."""
    network = api_settings.network
    root = root_key.verify_key.encode().hex()
    operator = Wallet.generate("operator", network, key_id="root")
    operator.signing_seed = bytes(root_key)
    make = lambda org, roles: Wallet.generate(org, network, root_public_key=root, name=org, country="CD", roles=roles)  # noqa: E731
    auditor, mine, trader, other = make("kr-auditor", ["auditor"]), make("kr-mine", ["mine"]), make("kr-trader", ["trader"]), make("kr-other", ["trader"])
    trader.key_id = "k1"
    old_seed = trader.signing_seed
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        op = Publisher(operator, client)
        for w in (auditor, mine, trader, other):
            await op.register_wallet(w)
        start, end = attestation_period()
        att = await Publisher(auditor, client).attest_site(
            site_id="kr-site", operator="kr-mine", name="Rotation pit", country="CD", region="Lualaba",
            lat=-10.7, lon=25.5, origin_class="industrial", valid_from=start, valid_until=end, capacity_g=10**9,
        )  # fmt: skip
        lots = [(await Publisher(mine, client).issue(site_id="kr-site", attestation_id=att.attestation_id,
                                                      amount_g=g, product="hydroxide")).lot_ids[0]
                for g in (6_000, 4_000, 2_000)]  # fmt: skip
        # the trader's new keys, announced by the operator; then its old key is revoked
        trader.signing_seed, trader.key_id = bytes(SigningKey.generate()), "k2"
        trader.sealing_secret = bytes(PrivateKey.generate())
        rotation = await op.submit(op.sign(RotateKey(org_id="kr-trader", new_key=KeyEntry(key_id="k2", public_key=trader.signing_public_hex),
                                                     sealing_key=trader.sealing_public_hex), new_nonce()))  # fmt: skip
        revocation = await op.submit(op.sign(RevokeKey(org_id="kr-trader", key_id="k1", reason="rotated"), new_nonce()))
        other_rotation = await op.submit(op.sign(RotateKey(org_id="kr-other", new_key=KeyEntry(
            key_id="k9", public_key=SigningKey.generate().verify_key.encode().hex())), new_nonce()))  # fmt: skip
        registration = (await client.execute('query { organization(id: "kr-trader") { registeredByEvent } }'))[
            "organization"]["registeredByEvent"]  # fmt: skip
        issuance = (await client.execute("query($id: ID!) { lot(id: $id) { createdByEvent } }", {"id": lots[1]}))["lot"]["createdByEvent"]
    return {"url": url, "root": root, "network": network, "mine": mine, "trader": trader, "old_seed": old_seed,
            "operator": operator, "root_key": root_key,
            "lots": lots, "registration": registration, "rotation": rotation.event_id, "issuance": issuance,
            "revocation": revocation.event_id, "other_rotation": other_rotation.event_id}  # fmt: skip


def a_box(net) -> str:
    return seal(lots_plaintext({net["lots"][2]: {"industrial": Opening(1, 1)}}), net["trader"].sealing_public_hex)


async def owner_of(url: str, lot_id: str) -> str:
    async with Client(url) as client:
        return (await client.lot(lot_id))["owner"]["id"]


async def test_registry_events_are_listed_in_ledger_order(net):
    async with Client(net["url"]) as client:
        org = (await client.execute('query { organization(id: "kr-trader") { registryEvents } }'))["organization"]
    assert org["registryEvents"] == [net["registration"], net["rotation"], net["revocation"]]


async def test_the_sdk_learns_rotated_keys_from_root_signed_events(net):
    async with Client(net["url"]) as client:
        registry = Registry(client, net["network"], net["root"])
        org = await registry.organization("kr-trader")
        assert org.sealing_key == net["trader"].sealing_public_hex
        assert org.signing_keys["k2"] == net["trader"].signing_public_hex
        assert set(org.revoked_at) == {"k1"}


async def test_a_transfer_to_a_rotated_organisation_is_sealed_to_its_new_key(net):
    """End to end: the mine seals the opening to the rotated sealing key; the trader, holding only
    its new keys, publishes with k2 and opens the box."""
    trader = net["trader"]
    async with Client(net["url"]) as client:
        await Publisher(net["mine"], client, autosave=False).transfer(net["lots"][0], "kr-trader")
        report = await sync(trader, client)
        assert report.unreadable == 0 and trader.lots[net["lots"][0]].openings["industrial"].value == 6_000
        await Publisher(trader, client, autosave=False).transfer(net["lots"][0], "kr-mine")
    assert await owner_of(net["url"], net["lots"][0]) == "kr-mine"


def listing_lie(net, kind: str) -> Rewrite:
    """Rewrite kr-trader's `registryEvents` (and, for a forgery, serve the forged event)."""
    forged = sign(RotateKey(org_id="kr-trader", new_key=KeyEntry(key_id="k7", public_key="11" * 32),
                            sealing_key=bytes(PrivateKey.generate().public_key).hex()),
                  network=net["network"], signer="operator", key_id="root", signing_key=SigningKey.generate())  # fmt: skip

    def rewrite(query, variables, answer):
        data = answer.get("data") or {}
        org = data.get("organization")
        if "organization(" in query and org and variables.get("id") == "kr-trader":
            events = org["registryEvents"]
            org["registryEvents"] = {
                "omit-rotation": [events[0]],
                "duplicated": [events[0], events[1], events[1], events[2]],
                "another-organisation": [events[0], net["other_rotation"], *events[1:]],
                "not-a-registry-event": [events[0], net["issuance"], *events[1:]],
                "forged": [*events, forged.event_id],
                "missing-registration": events[1:],
                "not-a-list": "everything is fine",
            }[kind]
            if kind == "forged":
                org["sealingKey"] = forged.payload.sealing_key
        if "event(" in query and variables.get("id") == forged.event_id:
            data["event"] = {"id": forged.event_id, "type": "rotate_key", "envelope": forged.to_json()}
        return answer

    return rewrite


@pytest.mark.parametrize(
    "kind, message",
    [
        ("omit-rotation", "sealing key"),
        ("duplicated", "does not apply"),
        ("another-organisation", "is about kr-other"),
        ("not-a-registry-event", "is not the operator.s"),
        ("forged", "not signed by the pinned root key"),
        ("missing-registration", "do not start with its registration"),
        ("not-a-list", "do not start with its registration"),
    ],
)
async def test_a_misreported_registry_is_refused_and_nothing_is_published(net, kind, message):
    async with Client(net["url"], transport=LyingTransport(listing_lie(net, kind))) as client:
        with pytest.raises(UntrustedAnswer, match=message):
            await Publisher(net["mine"], client, autosave=False).transfer(net["lots"][1], "kr-trader")
    assert await owner_of(net["url"], net["lots"][1]) == "kr-mine"


@pytest.mark.parametrize("offset_s, refused", [(5, True), (0, True), (-1, False)], ids=["after", "at", "before"])
async def test_an_event_signed_with_a_revoked_key_stands_only_if_dated_before_the_revocation(net, offset_s, refused):
    """A server holding the trader's compromised old key serves an envelope it signed; the SDK
    refuses it when dated at or after the revocation (the rule of ledger.bundle), not before."""
    async with Client(net["url"]) as client:
        revocation = parse_envelope((await client.event(net["revocation"]))["envelope"])
    served = sign(Transfer(lot_id=net["lots"][2], to="kr-trader", opening_sealed_to_receiver=a_box(net)),
                  network=net["network"], signer="kr-trader", key_id="k1", signing_key=SigningKey(net["old_seed"]),
                  timestamp=revocation.timestamp + timedelta(seconds=offset_s))  # fmt: skip

    def serve(query, variables, answer):
        if "event(" in query and variables.get("id") == served.event_id:
            answer["data"] = {"event": {"id": served.event_id, "type": "transfer", "envelope": served.to_json()}}
        return answer

    async with Client(net["url"], transport=LyingTransport(serve)) as client:
        registry = Registry(client, net["network"], net["root"])
        if refused:
            with pytest.raises(UntrustedAnswer, match="revoked at"):
                await registry.verified_event(served.event_id)
        else:
            assert (await registry.verified_event(served.event_id)).key_id == "k1"


def test_each_registry_listing_counts_one_read_in_the_query_budget():
    """`registryEvents` is one database query per organisation: a page of 100 organisations
    asking for it costs 100 more than the same page without it."""
    from graphql import parse

    from api.settings import Limits
    from resolvers.query_budget import analyse, operation_of

    def cost(text: str) -> int:
        document = parse(text)
        return analyse(operation_of(document, None), document, {}, Limits()).cost

    page = "{ organizations(first: 100) { edges { node { id %s } } } }"
    assert cost(page % "registryEvents") - cost(page % "") == 100


async def register(net, client: Client, org_id: str) -> Wallet:
    """A new trader `org_id` (key k1), registered by the operator."""
    wallet = Wallet.generate(org_id, net["network"], root_public_key=net["root"], name=org_id, country="CD",
                             roles=["trader"])  # fmt: skip
    wallet.key_id = "k1"
    await Publisher(net["operator"], client).register_wallet(wallet)
    return wallet


def operator_signed(net, payload, *, seconds_ago: int = 0):
    return sign(payload, network=net["network"], signer="operator", key_id="root", signing_key=net["root_key"],
                timestamp=datetime.now(UTC) - timedelta(seconds=seconds_ago))  # fmt: skip


@pytest.mark.parametrize("late", ["revocation", "rotation"])
async def test_registry_events_committed_out_of_date_order_are_read_as_the_ledger_reads_them(net, late):
    """The ledger orders registry events by commit; each one's own date need only be within the
    clock skew of the server. A revocation or rotation signed before, but committed after, another
    registry event (an envelope resent from the journal, two operator machines, a slow clock) is a
    registry the server and the offline verifier accept: the SDK must read it too, not refuse the
    organisation for good."""
    org_id = f"kr-late-{late}"
    async with Client(net["url"]) as client:
        await register(net, client, org_id)
        new_sealing = bytes(PrivateKey.generate().public_key).hex()
        rotation = RotateKey(org_id=org_id, new_key=KeyEntry(key_id="k2", public_key=SigningKey.generate().verify_key.encode().hex()),
                             sealing_key=new_sealing)  # fmt: skip
        revocation = RevokeKey(org_id=org_id, key_id="k1", reason="compromised")
        first, second = (rotation, revocation) if late == "revocation" else (revocation, rotation)
        envelopes = [operator_signed(net, first), operator_signed(net, second, seconds_ago=60)]  # the later one dated earlier
        op = Publisher(net["operator"], client)
        for envelope in envelopes:
            await op.submit(envelope)
        listed = (await client.execute("query($id: ID!) { organization(id: $id) { registryEvents } }", {"id": org_id}))
        assert listed["organization"]["registryEvents"][1:] == [e.event_id for e in envelopes]
        org = await Registry(client, net["network"], net["root"]).organization(org_id)
    assert set(org.signing_keys) == {"k1", "k2"} and org.sealing_key == new_sealing
    revoked = next(e for e in envelopes if isinstance(e.payload, RevokeKey))
    assert org.revoked_at == {"k1": revoked.timestamp}


async def test_a_long_lived_registry_seals_to_the_sealing_key_of_a_later_rotation(net):
    """A Publisher keeps its Registry for its whole life (a service that transfers all day). A
    rotation of the receiver's sealing key committed after the first transfer must be used for
    the next one: a key rotated away (lost, or compromised) must not keep receiving boxes."""
    async with Client(net["url"]) as client:
        await register(net, client, "kr-fresh")
        publisher = Publisher(net["mine"], client, autosave=False)
        before = await publisher.sealing_key_of("kr-fresh")
        new_sealing = bytes(PrivateKey.generate().public_key).hex()
        await Publisher(net["operator"], client).submit(operator_signed(net, RotateKey(
            org_id="kr-fresh", new_key=KeyEntry(key_id="k2", public_key=SigningKey.generate().verify_key.encode().hex()),
            sealing_key=new_sealing)))  # fmt: skip
        after = await publisher.sealing_key_of("kr-fresh")
    assert before != new_sealing and after == new_sealing


def root_signed_extra(net, kind: str):
    """A root-signed registry event of kr-trader that the ledger would refuse after its real ones."""
    fresh_key = SigningKey.generate().verify_key.encode().hex()
    payload, network = {
        "re-add-revoked-key": (RotateKey(org_id="kr-trader", new_key=KeyEntry(key_id="k1", public_key=fresh_key)), net["network"]),
        "re-add-live-key": (RotateKey(org_id="kr-trader", new_key=KeyEntry(key_id="k2", public_key=fresh_key)), net["network"]),
        "revoked-twice": (RevokeKey(org_id="kr-trader", key_id="k1", reason="again"), net["network"]),
        "other-network": (RotateKey(org_id="kr-trader", new_key=KeyEntry(key_id="k8", public_key=fresh_key)), "another-net"),
    }[kind]  # fmt: skip
    return sign(payload, network=network, signer="operator", key_id="root", signing_key=net["root_key"])


@pytest.mark.parametrize(
    "kind, message",
    [
        ("re-add-revoked-key", "does not apply"),
        ("re-add-live-key", "does not apply"),
        ("revoked-twice", "does not apply"),
        ("other-network", "is for network 'another-net'"),
    ],
)
async def test_a_root_signed_event_the_ledger_would_refuse_is_refused_in_the_listing(net, kind, message):
    """Signed by the real root key, so only the replay's rules stop it: a revocation then a re-add
    of the same key id (which would make the revoked key id sign again), a second revocation (which
    would move the revocation date), an event of another network using the same root key."""
    extra = root_signed_extra(net, kind)

    def rewrite(query, variables, answer):
        data = answer.get("data") or {}
        if "organization(" in query and data.get("organization") and variables.get("id") == "kr-trader":
            data["organization"]["registryEvents"].append(extra.event_id)
        if "event(" in query and variables.get("id") == extra.event_id:
            data["event"] = {"id": extra.event_id, "type": extra.payload.type, "envelope": extra.to_json()}
        return answer

    async with Client(net["url"], transport=LyingTransport(rewrite)) as client:
        with pytest.raises(UntrustedAnswer, match=message):
            await Registry(client, net["network"], net["root"]).organization("kr-trader")


async def test_a_registry_longer_than_the_listing_limit_is_refused_not_cut(net, monkeypatch):
    """The listing keeps the oldest events: cut at the limit, it would drop the latest rotations
    and revocations while looking complete, and the SDK would accept envelopes by a revoked key.
    Past the limit the field answers a typed error instead (kr-trader has 3 registry events)."""
    import api.store

    monkeypatch.setattr(api.store, "MAX_REGISTRY_EVENTS", 2)
    async with Client(net["url"]) as client:
        with pytest.raises(ApiRejection, match="more than 2 registry events") as refused:
            await client.execute('query { organization(id: "kr-trader") { registryEvents } }')
        assert refused.value.code == "REGISTRY_TOO_LONG"
        with pytest.raises(ApiRejection, match="REGISTRY_TOO_LONG"):
            await Registry(client, net["network"], net["root"]).organization("kr-trader")
    monkeypatch.setattr(api.store, "MAX_REGISTRY_EVENTS", 3)  # exactly at the limit: listed in full
    async with Client(net["url"]) as client:
        org = await Registry(client, net["network"], net["root"]).organization("kr-trader")
    assert set(org.revoked_at) == {"k1"}
