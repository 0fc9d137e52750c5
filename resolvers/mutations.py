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
    )


async def _publish(info: Info, envelope: JSON, payload_type: str) -> PublishResult:
    with rejections_as_errors():
        return _result(await info.context.ingestion.publish(envelope, expected_type=payload_type))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Operator-signed registry entry (payload type register_organization).")
    async def register_organization(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "register_organization")

    @strawberry.mutation(description="Operator-signed key addition (payload type rotate_key).")
    async def rotate_key(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "rotate_key")

    @strawberry.mutation(description="Operator-signed key revocation (payload type revoke_key).")
    async def revoke_key(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "revoke_key")

    @strawberry.mutation(description="Auditor-signed site attestation (payload type attest_site).")
    async def attest_site(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "attest_site")

    @strawberry.mutation(description="Site operator issues a lot (payload type issue).")
    async def issue_lot(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "issue")

    @strawberry.mutation(description="Owner transfers custody of a lot (payload type transfer).")
    async def transfer_lot(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "transfer")

    @strawberry.mutation(description="Owner consumes lots and creates new ones (payload type transform).")
    async def transform_lots(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "transform")

    @strawberry.mutation(description="Owner publishes a claim on a lot (payload type publish_claim).")
    async def publish_claim(self, info: Info, envelope: JSON) -> PublishResult:
        return await _publish(info, envelope, "publish_claim")
