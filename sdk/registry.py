"""The SDK trusts the server for nothing: every key and box is checked against the root key.

A wallet pins its network's root public key when it is created
(`Wallet.root_public_key`). `Registry` answers, for that network:

* `organization(org_id)`: the organisation as its **root-signed registration
  event** states it (signing keys, sealing key, roles). The server's
  `organization { sealingKey registeredByEvent }` only says where to look: the
  event is fetched, strictly decoded (`ledger.envelope.parse_envelope`), its id
  recomputed, its operator signature checked under the pinned root key; a
  server-reported sealing key that differs from the signed one is refused.
* `verified_event(event_id)`: a signed envelope, strictly decoded, whose id
  is the one asked for and whose signature verifies under a signing key of the
  signer's verified registration.
* `lot_commitments(lot_id)`: a lot's per-class commitments read from the
  verified event that created it (issue: the class from the verified
  attestation; transform: the output's commitments).

Keys from rotations: `organization { registryEvents }` lists the ids of the
organisation's registry events (registration, rotate_key, revoke_key) in
ledger order. Each is fetched and checked like the registration (strict
decoding, id, operator signature under the pinned root key, about this
organisation) and replayed in the listed order, under the ledger's rules: a
rotation adds a key id not seen before and may replace the sealing key, a
revocation needs a listed, unrevoked key and makes envelopes by it dated at
or after the revocation invalid (the date half of the rule of
`ledger.bundle`). The server's `sealingKey` must be the one the replay ends
with. The events' own dates need not increase: the ledger orders them by
commit, and each date is only within the server's clock skew.

Freshness: a Registry keeps what it verified (organisations, events), except
`sealing_key`, which re-reads the listing each time (verified events are not
fetched again), so a long-lived Publisher seals to the key of the latest
rotation.

Limit: the server chooses which events to list and in which order. An
omitted rotation makes the SDK refuse the new key (safe); an omitted
revocation, a withheld sealing-key rotation, or two sealing-key rotations
listed the wrong way round cannot be seen from the answers alone: the
transparency log's monitors (`oretrace monitor`, docs/log.md) are what detect
a server hiding or reordering registry events. Nor can the SDK see the ledger
position of other events: an envelope by a revoked key dated before its
revocation is accepted (a bundle also refuses it when listed after the
revocation; the ledger refuses it).

Every refusal is `UntrustedAnswer` (the message says what the server got
wrong); callers make no change before all checks of an operation passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger import statements as st
from ledger.envelope import Envelope, MalformedEnvelope, parse_envelope, signature_is_valid
from ledger.models import AttestSite, Issue, RegisterOrganization, RevokeKey, RotateKey, Transform, timestamp_text
from ledger.rules import ROOT_KEY_ID
from ledger.view import OPERATOR

from .client import ApiError, ApiRejection, Client


class UntrustedAnswer(ApiError):
    """The server's answer does not match what the root key vouches for. Nothing was changed.
    An ApiError: the CLI reports it in one line (exit 2), like any fault of the API."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"the server's answer cannot be trusted: {what}")


@dataclass(frozen=True)
class RegisteredOrganization:
    """An organisation as its root-signed registration states it."""

    org_id: str
    name: str
    roles: tuple[str, ...]
    signing_keys: dict[str, str]  # key id -> Ed25519 public key hex
    sealing_key: str  # X25519 public key hex
    event_id: str  # the register_organization event ("" for the operator)
    revoked_at: dict[str, datetime] = field(default_factory=dict)  # key id -> the revocation's timestamp


_ORG_QUERY = "query($id: ID!) { organization(id: $id) { id sealingKey registeredByEvent registryEvents } }"
_LOT_QUERY = "query($id: ID!) { lot(id: $id) { id createdByEvent } }"
_ATTESTATION_QUERY = "query($id: ID!) { attestation(id: $id) { id eventId } }"


class Registry:
    """Verified registry and events of one network, for one wallet's pinned root key."""

    def __init__(self, client: Client, network: str, root_public_key: str):
        self.client = client
        self.network = network
        self.root_public_key = root_public_key
        self._orgs: dict[str, RegisteredOrganization] = {}
        self._events: dict[str, Envelope] = {}

    async def organization(self, org_id: str, *, fresh: bool = False) -> RegisteredOrganization:
        """`org_id` as its root-signed registry events state it (kept; `fresh` re-reads the
        listing). ApiRejection UNKNOWN_ORGANIZATION if the server knows none; UntrustedAnswer
        if what it shows is not root-signed or does not replay."""
        if org_id in self._orgs and not fresh:
            return self._orgs[org_id]
        if org_id == OPERATOR:
            org = RegisteredOrganization(OPERATOR, "network operator", ("operator",),
                                         {ROOT_KEY_ID: self.root_public_key}, "", "")  # fmt: skip
            self._orgs[org_id] = org
            return org
        answer = (await self.client.execute(_ORG_QUERY, {"id": org_id})).get("organization")
        if answer is None:
            raise ApiRejection("UNKNOWN_ORGANIZATION", f"organisation {org_id} is not registered")
        event_id = str(answer.get("registeredByEvent"))
        env = await self._registry_event(org_id, event_id)
        p = env.payload
        if not isinstance(p, RegisterOrganization):
            raise UntrustedAnswer(f"event {event_id}, given as {org_id}'s registration, is not an operator registration")
        listed = answer.get("registryEvents")
        if not isinstance(listed, list) or not listed or listed[0] != event_id:
            raise UntrustedAnswer(f"the registry events listed for {org_id} do not start with its registration {event_id}")
        signing_keys = {k.key_id: k.public_key for k in p.signing_keys}
        sealing_key, revoked_at = p.sealing_key, {}
        for later_id in listed[1:]:
            later = await self._registry_event(org_id, str(later_id))
            match later.payload:
                case RotateKey(new_key=key, sealing_key=new_sealing_key) if key.key_id not in signing_keys:
                    signing_keys[key.key_id] = key.public_key
                    sealing_key = new_sealing_key or sealing_key
                case RevokeKey(key_id=key_id) if key_id in signing_keys and key_id not in revoked_at:
                    revoked_at[key_id] = later.timestamp
                case _:
                    raise UntrustedAnswer(
                        f"event {later_id}, listed as a registry event of {org_id}, does not apply after the"
                        " ones before it (a second registration, a duplicate key, or a revocation of an unknown key)"
                    )
        if answer.get("sealingKey") != sealing_key:
            raise UntrustedAnswer(
                f"the server gives {org_id}'s sealing key as {answer.get('sealingKey')!r}; its root-signed"
                f" registry events say {sealing_key}"
            )
        org = RegisteredOrganization(
            org_id, p.name, tuple(r.value for r in p.roles), signing_keys, sealing_key, event_id, revoked_at
        )
        self._orgs[org_id] = org
        return org

    async def _registry_event(self, org_id: str, event_id: str) -> Envelope:
        """A registry event about `org_id`, signed by the operator's root key (verified once,
        then kept with the other verified events)."""
        env = self._events.get(event_id) or await self._envelope(event_id)
        if env.signer != OPERATOR or env.key_id != ROOT_KEY_ID:
            raise UntrustedAnswer(f"event {event_id}, given as a registry event of {org_id}, is not the operator's")
        if not isinstance(env.payload, RegisterOrganization | RotateKey | RevokeKey):
            raise UntrustedAnswer(f"event {event_id}, given as a registry event of {org_id}, is not one")
        if env.payload.org_id != org_id:
            verb = "registers" if isinstance(env.payload, RegisterOrganization) else "is about"
            raise UntrustedAnswer(f"event {event_id}, given as a registry event of {org_id}, {verb} {env.payload.org_id}")
        if event_id not in self._events:
            if not signature_is_valid(env, self.root_public_key):
                raise UntrustedAnswer(f"the registry event {event_id} of {org_id} is not signed by the pinned root key")
            self._events[event_id] = env
        return env

    async def sealing_key(self, org_id: str) -> str:
        """The X25519 key (hex) to seal to `org_id` now: from its root-signed registry events,
        re-read at each call (a rotation since the last call is used)."""
        return (await self.organization(org_id, fresh=True)).sealing_key

    async def verified_event(self, event_id: str) -> Envelope:
        """The envelope of `event_id`, decoded strictly and signed by a registered key of its signer."""
        if event_id in self._events:
            return self._events[event_id]
        env = await self._envelope(event_id)
        signer = await self.organization(env.signer)
        public_key = signer.signing_keys.get(env.key_id)
        if public_key is None:
            raise UntrustedAnswer(
                f"event {event_id} is signed with key {env.key_id!r} of {env.signer}, which its root-signed"
                " registry events do not hold"
            )
        if not signature_is_valid(env, public_key):
            raise UntrustedAnswer(f"event {event_id}: the signature does not verify under {env.signer}'s key")
        revoked_at = signer.revoked_at.get(env.key_id)
        if revoked_at is not None and env.timestamp >= revoked_at:
            raise UntrustedAnswer(
                f"event {event_id} is signed with key {env.key_id!r} of {env.signer}, revoked at"
                f" {timestamp_text(revoked_at)}, and dated {timestamp_text(env.timestamp)}"
            )
        self._events[event_id] = env
        return env

    async def created_lot(self, lot_id: str) -> tuple[dict[str, str], str]:
        """({origin class: commitment hex}, product text) of `lot_id` from its verified creating event."""
        answer = (await self.client.execute(_LOT_QUERY, {"id": lot_id})).get("lot")
        if answer is None:
            raise UntrustedAnswer(f"the server does not know lot {lot_id}, which a signed event names")
        env = await self.verified_event(str(answer.get("createdByEvent")))
        match env.payload:
            case Issue() as p if st.issued_lot_id(env.network, env.signer, env.nonce) == lot_id:
                attestation = await self.attestation(p.attestation_id)
                return {attestation.payload.site.origin_class: p.commitment}, p.product
            case Transform() as p:
                ids = st.output_lot_ids(env.network, env.signer, env.nonce, len(p.outputs))
                if lot_id in ids:
                    output = p.outputs[ids.index(lot_id)]
                    return dict(output.commitments), output.product
        raise UntrustedAnswer(f"event {env.event_id}, given as the creation of lot {lot_id}, does not create it")

    async def attestation(self, attestation_id: str) -> Envelope:
        """The verified attest_site event of `attestation_id`."""
        answer = (await self.client.execute(_ATTESTATION_QUERY, {"id": attestation_id})).get("attestation")
        if answer is None:
            raise UntrustedAnswer(f"the server does not know attestation {attestation_id}, which a signed event names")
        env = await self.verified_event(str(answer.get("eventId")))
        if not isinstance(env.payload, AttestSite) or st.attestation_id(env.network, env.signer, env.nonce) != attestation_id:
            raise UntrustedAnswer(f"event {env.event_id}, given as attestation {attestation_id}, does not create it")
        return env

    async def _envelope(self, event_id: str) -> Envelope:
        event: Any = await self.client.event(event_id)
        if not isinstance(event, dict) or not isinstance(event.get("envelope"), dict):
            raise UntrustedAnswer(f"the server has no envelope for event {event_id}")
        try:
            env = parse_envelope(event["envelope"])
        except MalformedEnvelope as exc:
            raise UntrustedAnswer(f"event {event_id}: the envelope is malformed ({exc})") from None
        if env.event_id != event_id:
            raise UntrustedAnswer(f"the envelope served as event {event_id} is event {env.event_id}")
        if env.network != self.network:
            raise UntrustedAnswer(f"event {event_id} is for network {env.network!r}, the wallet's is {self.network!r}")
        return env
