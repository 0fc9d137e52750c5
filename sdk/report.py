"""`oretrace verify`: reading a bundle file, and printing the verification report.

`read_bundle_file` turns any file into a bundle dict or an `UnreadableBundle`
(exit 2) however it is broken: binary, not UTF-8, not I-JSON (duplicate names,
nesting deeper than 64, integers of more than 40 digits), a saved GraphQL
response, a protocol v1 bundle. `print_report` and `json_report` give the
human and the machine report; every string that came from the bundle goes
through `sdk.terminal.safe` (human) or `json.dumps` (ASCII escapes) so that a
bundle cannot draw on the user's terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ledger.bundle import V1_FORMAT, V1_REFUSAL, VerificationReport, describe_lots
from ledger.encoding import StrictJSONError, loads_strict

from .terminal import safe
from .trust_store import Anchor

#: Largest bundle file read (a full demo bundle is well under 1 MiB).
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


class UnreadableBundle(Exception):
    """The file is not a disclosure bundle this verifier can read (exit 2). One line."""


def read_bundle_file(path: Path) -> dict[str, Any]:
    """The bundle in `path` as a JSON object; UnreadableBundle saying why not."""
    too_large = UnreadableBundle(f"{path}: larger than {MAX_BUNDLE_BYTES} bytes; not a disclosure bundle")
    try:
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise too_large
        with path.open("rb") as file:  # a pipe (`verify <(curl ...)`) has no size: bound the read itself
            raw = file.read(MAX_BUNDLE_BYTES + 1)
        if len(raw) > MAX_BUNDLE_BYTES:
            raise too_large
    except FileNotFoundError:
        raise UnreadableBundle(f"{path}: no such file") from None
    except OSError as exc:
        raise UnreadableBundle(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = loads_strict(raw)
    except StrictJSONError as exc:
        raise UnreadableBundle(f"{path}: not a JSON disclosure bundle ({exc})") from None
    if not isinstance(data, dict):
        raise UnreadableBundle(f"{path}: not a disclosure bundle (a JSON object is expected)")
    if "format" not in data and ("data" in data or "errors" in data):
        raise UnreadableBundle(
            f"{path}: this is a GraphQL response; the bundle is at .data.disclosureBundle"
            " (e.g. jq .data.disclosureBundle FILE > bundle.json)"
        )
    if "format" not in data and "events" not in data:
        raise UnreadableBundle(
            f"{path}: not a disclosure bundle (a bundle is a JSON object with \"format\" and \"events\";"
            " get one with: oretrace bundle LOT CLAIM --out FILE)"
        )
    if data.get("format") == V1_FORMAT:
        raise UnreadableBundle(f"{path}: {V1_REFUSAL}")
    return data


def _anchor_json(anchor: Anchor) -> dict[str, Any]:
    return {"root_public_key": anchor.root_public_key, "source": anchor.source, "network": anchor.network}


def json_report(report: VerificationReport, bundle: Path, anchor: Anchor, elapsed: float) -> dict[str, Any]:
    """The machine report: the VerificationReport's fields, plus `bundle`, `trust_anchor`
    ({root_public_key, source, network}), `root_key`/`root_key_source` (same, flat) and `seconds`."""
    out = report.to_json()
    out.update(
        bundle=str(bundle),
        trust_anchor=_anchor_json(anchor),
        root_key=anchor.root_public_key,
        root_key_source=anchor.source,
        seconds=round(elapsed, 3),
    )
    return out


def print_report(
    console: Console, report: VerificationReport, bundle: Path, anchor: Anchor, elapsed: float,
    ignored_beside_key: Path | None = None,
) -> None:  # fmt: skip
    """The human report on `console` (use `sdk.terminal.plain_console()`)."""
    console.print(f"[bold]Bundle[/] {safe(bundle)}", soft_wrap=True)
    console.print(f"[bold]Trust anchor[/] root key {anchor.root_public_key} from {safe(anchor.source)}", soft_wrap=True)
    if ignored_beside_key is not None:
        console.print(
            f"  [yellow]note:[/] {safe(ignored_beside_key)} next to the bundle holds another key;"
            " it was ignored (a key shipped with a bundle is never a trust anchor).",
            soft_wrap=True,
        )
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        table.add_row(safe(check.name), "[green]pass[/]" if check.ok else "[bold red]FAIL[/]", safe(check.detail))
    console.print(table)
    if report.anchor:
        console.print(
            f"[bold]Anchored in[/] {safe(report.anchor['origin'])} checkpoint of size {safe(report.anchor['size'])},"
            f" root {safe(report.anchor['root'])}",
            soft_wrap=True,
        )
    claim = report.claim or {}
    if report.ok:
        console.print(Panel(_proven_text(report), title="verified offline", expand=False))
    else:
        failed = [c for c in report.checks if not c.ok]
        lines = "\n".join(f"  - {safe(c.name)}: {safe(c.detail)}" for c in failed)
        body = (
            f"[bold red]NOT PROVEN[/]: claim {safe(claim.get('claim_id', '?'))} on {_scope(claim)}.\n\n"
            f"Failed check(s):\n{lines}\n\n"
            "Nothing in this bundle can be relied on: it was altered, is incomplete, or was not issued under this"
            " root key."
        )
        console.print(Panel(body, title="verification failed", expand=False))
    console.print(f"[dim]{elapsed:.2f} s[/]")


def _scope(claim: dict[str, Any]) -> str:
    """"lot A" / "3 lots: A, B, C" from a report's claim (whatever a failed bundle left there)."""
    lot_ids = claim.get("lot_ids")
    if isinstance(lot_ids, list) and lot_ids and all(isinstance(x, str) for x in lot_ids):
        return safe(describe_lots(lot_ids))
    return "lot ?"


def _mass_balance_text(meaning: dict[str, Any]) -> str:
    """The claimed set (one line per lot) and what the aggregate sums over."""
    lots = "\n".join(f"  - {safe(lot['lot_id'])}: {safe(lot['product'])}" for lot in meaning.get("lots", []))
    mb = meaning.get("mass_balance") or {}
    summary = (
        f"Mass balance over the set: {safe(mb.get('lots'))} lot(s) summed per origin class, resting on"
        f" {safe(mb.get('upstream_lots'))} upstream lots, {safe(mb.get('issued_lots'))} issuances and"
        f" {safe(mb.get('transformations'))} balanced, loss-capped transformations; origin classes upstream:"
        f" {safe(', '.join(mb.get('origin_classes', [])) or 'none')}."
    )
    return f"Claimed lots:\n{lots or '  (none)'}\n{summary}\n"


def _proven_text(report: VerificationReport) -> str:
    claim, meaning = report.claim, report.meaning
    sites = "\n".join(
        f"  - {safe(s['name'])} ({safe(s['site_id'])}), {safe(s['region'])}, {safe(s['country'])}:"
        f" {safe(s['origin_class'])}, operated by {safe(s['operator_name'])}"
        for s in meaning.get("sites", [])
    )
    transformers = "\n".join(
        f"  - {safe(t['name'])} ({safe(t['org_id'])}), {safe(t['country'])}" for t in meaning.get("transformers", [])
    )
    model = safe(meaning.get("model", "?"))
    if meaning.get("identity_preserved") and meaning.get("model") != "identity preserved":
        model += "; identity preserved: every issued ancestor comes from a single site"
    return (
        f"[bold green]PROVEN[/]: {safe(claim.get('statement'))}, for {_scope(claim)},"
        f" claimed by {safe(claim.get('owner_name'))} ({safe(claim.get('owner'))}).\n\n"
        f"What it means: {safe(meaning.get('wording', ''))}.\n"
        f"Chain-of-custody model (ISO 22095): {model}.\n"
        f"Sites of the ancestry:\n{sites or '  (none)'}\n"
        f"Organisations that transformed the material:\n{transformers or '  (none)'}\n"
        f"{_mass_balance_text(meaning)}\n"
        f"All {report.events} events behind {'this lot' if len(claim.get('lot_ids') or []) == 1 else 'these lots'} (registrations, site attestations, issuances, transfers,"
        " transformations, the claim) are signed by keys that chain to the root key and obey the ledger rules:"
        " every issuance stayed within its site's audited capacity, no lot was consumed twice, every"
        f" transformation balances per origin class, and {report.range_proofs} range proofs verified in one"
        " batch.\n\n"
        "What it rests on: the root key you trusted, and the auditor's attestation of each site's origin class"
        " and capacity. What it does not reveal: any amount (the bundle holds commitments, proofs, signatures"
        " and sealed openings; its text fields, such as product names, are public and are the publishers' own"
        " words)."
    )
