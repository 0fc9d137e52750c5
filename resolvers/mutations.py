"""Mutations: each takes a signed envelope (`Envelope.to_json()`) whose payload
type must match the mutation, and returns the accepted event, or a typed error
(`extensions.code` = the ledger rejection code) with nothing written."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from api.service import PublishOutcome

from .context import Info
from .errors import rejections_as_errors
from .types import PublishResult


def _result(outcome: PublishOutcome) -> PublishResult:
    return PublishResult(
        event_id=strawberry.ID(outcome.event_id),
        type=outcome.type,
        lot_ids=[strawberry.ID(x) for x in outcome.lot_ids],
        claim_id=strawberry.ID(outcome.claim_id) if outcome.claim_id else None,
        attestation_id=strawberry.ID(outcome.attestation_id) if outcome.attestation_id else None,
        log_index=outcome.log_index,
    )


def _publish_mutation(payload_type: str, what: str):
    """A mutation accepting only envelopes of `payload_type`: one mutation per
    payload type keeps the schema self-describing while all share one code path."""

    async def publish(info: Info, envelope: JSON) -> PublishResult:
        with rejections_as_errors():
            return _result(await info.context.ingestion.publish(envelope, expected_type=payload_type))

    return strawberry.mutation(resolver=publish, description=f"{what} (payload type {payload_type}).")


@strawberry.type
class Mutation:
    register_organization = _publish_mutation("register_organization", "Operator-signed registry entry")
    rotate_key = _publish_mutation("rotate_key", "Operator-signed key addition")
    revoke_key = _publish_mutation("revoke_key", "Operator-signed key revocation")
    attest_site = _publish_mutation("attest_site", "Auditor-signed site attestation")
    revoke_attestation = _publish_mutation("revoke_attestation", "Auditor-signed revocation of its attestation")
    issue_lot = _publish_mutation("issue", "Site operator issues a lot")
    transfer_lot = _publish_mutation("transfer", "Owner transfers custody of a lot")
    transform_lots = _publish_mutation("transform", "Owner consumes lots and creates new ones")
    publish_claim = _publish_mutation("publish_claim", "Owner publishes a claim on a lot")
    register_log_key = _publish_mutation("register_log_key", "Operator-signed registration of a log checkpoint key")
