"""Public text is public: free-text fields that would reveal a quantity.

Every text field of an envelope (product names, site names and regions,
organisation names, revocation reasons) is signed in clear and copied into
every disclosure bundle: anyone can read it. Amounts stay hidden only if the
texts do not spell them out. `check_product_text` refuses a product text that
holds a mass, a volume or a percentage (a grade turns a hidden amount of
contained cobalt into a gross mass, and vice versa) unless the caller passes
`allow_public_quantity=True` (CLI: `--allow-public-quantity`); the Publisher
raises it as `sdk.publisher.PublicQuantity` (a ProvingRefused).
"""

from __future__ import annotations

import re

#: A number followed by a unit of mass, volume or proportion (case-insensitive):
#: g kg t kt Mt tonne(s) ton(s) lb(s) oz, l ml litre(s) liter(s) gal(lon(s)) m3 m³,
#: % percent per cent ppm wt%.
_QUANTITY = re.compile(
    r"(?<![A-Za-z])\d[\d,._\s]*\s*"
    r"(%|wt\s*%|per\s*cent\b|percent\b|ppm\b"
    r"|(?:k|m)?g\b|grams?\b|kilo(?:gram)?s?\b|(?:k|m)?t\b|tonnes?\b|tons?\b|lbs?\b|pounds?\b|oz\b"
    r"|(?:m)?l\b|litres?\b|liters?\b|gal(?:lons?)?\b|m3\b|m³|cubic\b)",
    re.IGNORECASE,
)


def quantity_in(text: str) -> str | None:
    """The first mass, volume or percentage written in `text` (e.g. "20.0 t"), or None."""
    match = _QUANTITY.search(text)
    return match.group(0).strip() if match else None
