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

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen"
    "|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|billion"
    "|dozen|half(?:\\s+an?)?|quarter(?:\\s+of\\s+an?)?"
)
#: A quantity: a number (digits in any script, with separators, a decimal comma or point,
#: an exponent, a k/M multiplier, or English number words: "twenty", "half a") followed
#: by a unit of mass, volume or proportion (case-insensitive), optionally qualified
#: (metric, short, long, dry, wet): g kg t kt Mt dmt wmt mtu tonne(s) ton(s) tonnen
#: tonelada(s) cwt lb(s) oz, l ml litre(s) liter(s) gal(lon(s)) m3 m³, % wt% pct
#: percent per cent per mille ‰ ppm. A heuristic for honest mistakes, not a filter
#: against a publisher who wants to leak: any free text can encode a number.
_WORD = "(?:" + _NUMBER_WORDS + ")"
# Matching stays linear in the text's length: a number is only matched from its first
# digit (whitespace inside it only before a digit), number words at most six in a row,
# bounded gaps between the parts.
_QUANTITY = re.compile(
    r"(?:(?<![A-Za-z\d,._])(?<!\d\s)\d(?:[\d,._]|\s(?=\d))*(?:e[+-]?\d+)?[\s-]{0,3}"
    r"|\b" + _WORD + r"(?:[\s-]+(?:and[\s-]+)?" + _WORD + r"){0,5}[\s-]{1,3})"
    r"(?:(?:k|m|thousand|million)\s{0,3})?(?:(?:metric|short|long|dry|wet)\s{1,3})?"
    r"(%|‰|wt\.?\s{0,3}%|per[\s-]{0,3}cent\b|percent\b|pct\b|per[\s-]{0,3}mille\b|ppm\b"
    r"|(?:k|m)?g\b|grams?\b|kilo(?:gram)?s?\b|(?:k|m|dm|wm)?t\b|mtu\b|tonnes?\b|tons?\b|tonnen\b|toneladas?\b"
    r"|cwt\b|lbs?\b|pounds?\b|oz\b"
    r"|(?:m)?l\b|litres?\b|liters?\b|gal(?:lons?)?\b|m3\b|m³|cubic\b)",
    re.IGNORECASE,
)


def quantity_in(text: str) -> str | None:
    """The first mass, volume or percentage written in `text` (e.g. "20.0 t"), or None."""
    match = _QUANTITY.search(text)
    return match.group(0).strip() if match else None
