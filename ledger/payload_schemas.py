"""The payload schemas as a reference table, generated from the models.

`markdown()` renders every payload and nested object of `ledger.models` (from
pydantic's JSON Schema of the `Payload` union) as one table per object: field,
JSON type, constraints, required or optional (with its canonical spelling when
absent). docs/ledger.md embeds the output between the markers
`<!-- payload-schemas:begin -->` and `<!-- payload-schemas:end -->`;
tests/test_docs_schemas.py fails when the two differ, so the documentation
follows the models. Regenerate with `python -m ledger.payload_schemas --write`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from . import models
from .models import ORIGIN_CLASSES, ORIGIN_CLASSES_VERSION, Payload

BEGIN = "<!-- payload-schemas:begin -->"
END = "<!-- payload-schemas:end -->"
#: Objects in the order a reader meets them: payloads (union order), then nested objects.
_ORDER = ("RegisterOrganization", "RotateKey", "RevokeKey", "AttestSite", "RevokeAttestation", "Issue", "Transfer", "Transform",
          "PublishClaim", "RegisterLogKey", "KeyEntry", "SiteInfo", "Location", "OutputLot")  # fmt: skip


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        target = defs[_ref_name(schema["$ref"])]
        if "enum" in target:
            return "string, one of " + ", ".join(f"`{v}`" for v in target["enum"])
        return f"object `{_ref_name(schema['$ref'])}`"
    if "anyOf" in schema:
        return " or ".join(_type(s, defs) for s in schema["anyOf"] if s.get("type") != "null")
    kind = schema.get("type")
    if "const" in schema:
        return f"string `\"{schema['const']}\"`"
    if kind == "array":
        return f"array of {_type(schema['items'], defs)}"
    if kind == "object":
        keys = schema.get("propertyNames", {}).get("enum")
        values = _type(schema.get("additionalProperties", {}), defs)
        return f"object {{origin class: {values}}}" if keys == list(ORIGIN_CLASSES) else f"object of {values}"
    if kind == "string" and schema.get("format") == "date-time":
        return "string, timestamp `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds)"
    return {"string": "string", "integer": "integer (JSON number)", "number": "number"}.get(kind, str(kind))


def _constraints(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return "; ".join(filter(None, (_constraints(s) for s in schema["anyOf"] if s.get("type") != "null")))
    parts = []
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    for key, text in (("minLength", "length >= {}"), ("maxLength", "length <= {}"), ("minItems", "items >= {}"),
                      ("maxItems", "items <= {}"), ("minimum", ">= {}"), ("exclusiveMinimum", "> {}"),
                      ("maximum", "<= {}"), ("exclusiveMaximum", "< {}")):  # fmt: skip
        if key in schema:
            parts.append(text.format(schema[key]))
    if schema.get("type") == "array":
        inner = _constraints(schema["items"])
        if inner:
            parts.append(f"each: {inner}")
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        inner = _constraints(schema["additionalProperties"])
        if inner:
            parts.append(f"each value: {inner}")
    if "description" in schema and "$ref" not in schema:
        parts.append(schema["description"])
    return "; ".join(parts)


def _presence(model: str, name: str, required: set[str]) -> str:
    if name in required:
        return "required"
    # from the model, not the JSON schema: a default_factory (e.g. `retire: []`) has no
    # "default" in the schema, yet the field is always written like any other default
    default = getattr(models, model).model_fields[name].get_default(call_default_factory=True)
    if default is None:
        return "optional: omitted when absent (never `null`)"
    return f"always written; `{json.dumps(default)}` if not given"


def markdown() -> str:
    """The tables (GitHub-flavoured markdown), deterministic."""
    schema = TypeAdapter(Payload).json_schema(mode="validation")
    defs = schema["$defs"]
    lines = [
        f"Origin classes, version {ORIGIN_CLASSES_VERSION}, in this order: "
        + ", ".join(f"`{c}`" for c in ORIGIN_CLASSES)
        + ". Every object refuses unknown members.",
    ]
    for name in _ORDER:
        d = defs[name]
        required = set(d.get("required", []))
        title = f"`{d['properties']['type']['const']}` ({name})" if "type" in d["properties"] else f"`{name}`"
        lines += ["", f"#### {title}", "", "| field | JSON type | constraints | presence |", "|---|---|---|---|"]
        for field, prop in d["properties"].items():
            presence = "required" if field == "type" else _presence(name, field, required)
            constraints = _constraints(prop).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{field}` | {_type(prop, defs)} | {constraints} | {presence} |")
    return "\n".join(lines) + "\n"


def embed(document: str) -> str:
    """`document` with the text between the markers replaced by `markdown()`."""
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown()}{END}{tail}"


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "ledger.md"
    if sys.argv[1:] == ["--write"]:
        target.write_text(embed(target.read_text()))
    else:
        sys.stdout.write(markdown())
