"""Async GraphQL client for the oretrace API.

One method per mutation (each takes a signed `Envelope`) and the queries the
CLI and the demo need. Errors become typed exceptions:

* `ApiRejection(code, message)`: the server refused a publication or a query
  for a domain reason; `code` is a `ledger.errors.Code` value (or a limit /
  request-error code: GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED, the
  query limits included) taken from the GraphQL error's `extensions.code`.
* `ApiError`: anything else (transport failure, HTTP error, masked internal
  error, a response that is not GraphQL).

The HTTP transport is injectable, so tests run the client against the ASGI app
in-process (`httpx.ASGITransport`) or against a real server over TCP.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from ledger.encoding import loads_strict
from ledger.envelope import Envelope
from ledger.errors import RETRYABLE_CODES, Code

#: Codes after which `publish` resends the same envelope.
RETRYABLE = frozenset(code.value for code in RETRYABLE_CODES)
#: The largest answer the client reads (bytes). The largest honest answers are disclosure
#: bundles: ~5 KB per event, so this leaves room for bundles of tens of thousands of events.
MAX_RESPONSE_BYTES = 256 * 2**20


def _shown(content: bytes) -> str:
    """The start of an answer that is not a GraphQL response, for an error message."""
    return repr(content[:300].decode("utf-8", "replace"))


class ApiError(Exception):
    """Transport failure, HTTP error or an unexpected GraphQL error."""


class ApiRejection(ApiError):
    """The server refused the request with a typed reason (`extensions.code`)."""

    def __init__(self, code: str, message: str, *, path: list | None = None):
        self.code = code
        self.message = message
        self.path = path
        super().__init__(f"{code}: {message}")

    @property
    def ledger_code(self) -> Code | None:
        try:
            return Code(self.code)
        except ValueError:
            return None


PUBLISH_FIELDS = "eventId type lotIds claimId attestationId logIndex"

MUTATIONS = {
    "register_organization": "registerOrganization",
    "rotate_key": "rotateKey",
    "revoke_key": "revokeKey",
    "attest_site": "attestSite",
    "revoke_attestation": "revokeAttestation",
    "issue": "issueLot",
    "transfer": "transferLot",
    "transform": "transformLots",
    "publish_claim": "publishClaim",
    "register_log_key": "registerLogKey",
}

LOT_FIELDS = """
  id owner { id name } issuer { id } product originClass consumed
  commitments { originClass commitment }
  site { id name }
  createdAt
"""


class Client:
    """GraphQL over HTTP. Use as `async with Client(url) as c: ...`."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/graphql",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        publish_attempts: int = 5,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ):
        self.url = url
        self.publish_attempts = max(1, publish_attempts)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            headers={"accept": "application/graphql-response+json, application/json", **(headers or {})},
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---------------------------------------------------------------- core
    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL operation; return `data` or raise a typed exception."""
        body: dict[str, Any] = {"query": query}
        if variables:
            body["variables"] = variables
        status, content = await self._post(body)
        try:
            # the one I-JSON reader: a hostile endpoint's deep nesting must not crash the
            # C decoder (py_ecc raises the recursion limit), nor duplicate names go unseen
            payload = loads_strict(content)
        except ValueError:  # StrictJSONError is a ValueError
            raise ApiError(f"HTTP {status} from {self.url}: {_shown(content)}") from None
        if not isinstance(payload, dict):
            raise ApiError(f"HTTP {status}: not a GraphQL response")
        errors = payload.get("errors") or []
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
            code = (first.get("extensions") or {}).get("code")
            message = first.get("message", "")
            if code and code != "INTERNAL_SERVER_ERROR":
                raise ApiRejection(str(code), message, path=first.get("path"))
            raise ApiError(f"GraphQL error (HTTP {status}): {message}")
        if status >= 400:
            raise ApiError(f"HTTP {status} from {self.url}: {_shown(content)}")
        data = payload.get("data")
        if data is None:
            raise ApiError("GraphQL response without data")
        return data

    async def _post(self, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST `body`; (status, response bytes). The server is not trusted to be brief: the
        answer is read in chunks, at most `max_response_bytes` of it, and the whole exchange
        within `timeout` seconds (httpx's own timeout bounds each read, not their sum).
        ApiError if unreachable, too slow or too large."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http.stream("POST", self.url, json=body) as response:
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_response_bytes:
                            raise ApiError(
                                f"the answer from {self.url} exceeds {self.max_response_bytes:,} bytes; nothing of it was used"
                            )
                        chunks.append(chunk)
                    return response.status_code, b"".join(chunks)
        except TimeoutError:
            raise ApiError(f"no complete answer from {self.url} within {self.timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ApiError(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from exc

    # ----------------------------------------------------------- mutations
    async def publish(self, envelope: Envelope) -> dict[str, Any]:
        """Submit any signed envelope through the mutation for its payload type.

        Retries, resending the SAME envelope (publication is idempotent: a
        resend of an accepted envelope returns its original outcome), when the
        server answers SERVICE_UNAVAILABLE or OUTCOME_UNKNOWN or cannot be
        reached: up to `publish_attempts` attempts, waiting the server's retry
        hint or an exponential back-off with jitter (0.5 s doubling, at most
        8 s). Raises the last ApiRejection / ApiError when attempts run out."""
        field = MUTATIONS[envelope.payload.type]
        query = f"mutation($e: JSON!) {{ {field}(envelope: $e) {{ {PUBLISH_FIELDS} }} }}"
        variables = {"e": envelope.to_json()}
        attempt = 0
        while True:
            attempt += 1
            try:
                return (await self.execute(query, variables))[field]
            except ApiRejection as exc:
                if exc.code not in RETRYABLE or attempt >= self.publish_attempts:
                    raise
            except ApiError:  # unreachable or a broken answer: the envelope may or may not have landed
                if attempt >= self.publish_attempts:
                    raise
            await asyncio.sleep(random.uniform(0.5, 1.0) * min(8.0, 0.5 * 2 ** (attempt - 1)))

    async def register_organization(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    async def rotate_key(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    async def revoke_key(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    async def attest_site(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    async def issue_lot(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    async def transfer_lot(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    async def transform_lots(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    async def publish_claim(self, envelope: Envelope) -> dict[str, Any]:
        return await self.publish(envelope)

    # ------------------------------------------------------------------ log
    async def log_key(self) -> dict[str, Any]:
        """{origin, publicKey, vkey, registered}: the server's word, to be registered by the operator."""
        return (await self.execute("{ logKey { origin publicKey vkey registered } }"))["logKey"]

    async def inclusion_proof(self, event_id: str) -> dict[str, Any] | None:
        """{logIndex, treeSize, leafHash, hashes, checkpoint} of an event, in the latest checkpoint."""
        query = (
            "query($e: ID!) { inclusionProof(eventId: $e) { logIndex treeSize leafHash hashes checkpoint } }"
        )
        return (await self.execute(query, {"e": event_id}))["inclusionProof"]

    # -------------------------------------------------------------- queries
    async def organization(self, org_id: str) -> dict[str, Any] | None:
        q = "query($id: ID!) { organization(id: $id) { id name country roles sealingKey } }"
        return (await self.execute(q, {"id": org_id}))["organization"]

    async def attestation(self, attestation_id: str) -> dict[str, Any] | None:
        q = """query($id: ID!) { attestation(id: $id) {
                 id site { id } originClass validFrom validUntil capacityCommitment
                 lastIssuance { seq cumulative } } }"""
        return (await self.execute(q, {"id": attestation_id}))["attestation"]

    async def last_issuance(self, attestation_id: str) -> dict[str, Any] | None:
        q = "query($id: ID!) { attestation(id: $id) { id lastIssuance { seq cumulative } } }"
        att = (await self.execute(q, {"id": attestation_id}))["attestation"]
        if att is None:
            raise ApiRejection(Code.ATTESTATION_NOT_FOUND.value, f"no attestation {attestation_id}")
        return att["lastIssuance"]

    async def lot(self, lot_id: str) -> dict[str, Any] | None:
        q = f"query($id: ID!) {{ lot(id: $id) {{ {LOT_FIELDS} }} }}"
        return (await self.execute(q, {"id": lot_id}))["lot"]

    async def lots(self, *, owner: str | None = None, consumed: bool | None = None, first: int = 100) -> list[dict]:
        """Every lot matching the filters, following the cursor pagination."""
        q = f"""query($first: Int!, $after: String, $owner: ID, $consumed: Boolean) {{
                  lots(first: $first, after: $after, owner: $owner, consumed: $consumed) {{
                    edges {{ cursor node {{ {LOT_FIELDS} }} }}
                    pageInfo {{ hasNextPage endCursor }} }} }}"""
        return await self._all_pages(q, "lots", {"first": first, "owner": owner, "consumed": consumed})

    async def _all_pages(self, query: str, field: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
        """Every node of a connection, following `after` cursors until the last page."""
        out: list[dict] = []
        after = None
        while True:
            conn = (await self.execute(query, {**variables, "after": after}))[field]
            out.extend(edge["node"] for edge in conn["edges"])
            if not conn["pageInfo"]["hasNextPage"]:
                return out
            after = conn["pageInfo"]["endCursor"]

    async def provenance(self, lot_id: str, max_depth: int = 50) -> dict[str, Any]:
        q = """query($id: ID!, $d: Int) { provenance(lotId: $id, maxDepth: $d) {
                 root { id } truncated depth
                 nodes { id product originClass site { id name region } owner { id name } }
                 edges { parent child } } }"""
        return (await self.execute(q, {"id": lot_id, "d": max_depth}))["provenance"]

    async def claims(self, lot_id: str) -> list[dict[str, Any]]:
        """The claims whose set contains `lot_id` (single-lot and aggregate), oldest first."""
        q = "query($id: ID!) { claims(lotId: $id) { id lotIds kind originClass classSet p pMax q low high } }"
        return (await self.execute(q, {"id": lot_id}))["claims"]

    async def disclosure_bundle(self, lot_id: str | None, claim_id: str) -> dict[str, Any]:
        """The claim's disclosure bundle; `lot_id` (or None) must be one of the claim's lots."""
        q = "query($l: ID, $c: ID!) { disclosureBundle(lotId: $l, claimId: $c) }"
        return (await self.execute(q, {"l": lot_id, "c": claim_id}))["disclosureBundle"]

    async def sealed_openings(self, recipient: str, *, first: int = 100) -> list[dict[str, Any]]:
        """Every opening sealed to `recipient`, oldest first (all pages)."""
        q = """query($r: ID!, $first: Int!, $after: String) {
                 sealedOpenings(recipient: $r, first: $first, after: $after) {
                   edges { node { recipient lotIds ciphertext eventId } } pageInfo { hasNextPage endCursor } } }"""
        return await self._all_pages(q, "sealedOpenings", {"r": recipient, "first": first})

    async def event(self, event_id: str) -> dict[str, Any] | None:
        q = "query($id: ID!) { event(id: $id) }"
        return (await self.execute(q, {"id": event_id}))["event"]

    async def healthy(self) -> bool:
        base = self.url.rsplit("/graphql", 1)[0]
        try:
            r = await self._http.get(base + "/healthz")
        except (httpx.HTTPError, httpx.InvalidURL):
            return False
        return r.status_code == 200
