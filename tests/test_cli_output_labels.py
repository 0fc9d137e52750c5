"""Origin classes in narrow tables (`lots`' origin mix, `transform`'s plan) get distinct labels.

Before: the plan's headers were `k[:5] + "."` and the mix used `k[:3]`, so
recycled_pre_consumer and recycled_post_consumer both showed as "recyc." /
"rec": a plan read "recyc. recyc." and a 50/50 lot "rec 50% rec 50%".
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import sdk.cli as cli
from ledger.models import ORIGIN_CLASSES


def test_every_origin_class_has_a_distinct_short_label():
    labels = [cli._class_abbrev(k) for k in ORIGIN_CLASSES]
    assert len(set(labels)) == len(ORIGIN_CLASSES), labels
    assert all(len(label) <= 8 for label in labels), labels


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ({"recycled_pre_consumer": 50, "recycled_post_consumer": 50}, "rec-pre 50% rec-post 50%"),
        ({"industrial": 84, "recycled_post_consumer": 16}, "ind 84% rec-post 16%"),
        ({"industrial": 999, "recycled_pre_consumer": 1}, "ind 99% rec-pre <1%"),
        ({"artisanal": 3}, "art 100%"),
    ],
)
def test_origin_mix_names_each_class_unambiguously(amounts, expected):
    assert cli._mix({k: amounts.get(k, 0) for k in ORIGIN_CLASSES}) == expected


def test_transform_plan_headers_are_distinct_at_80_columns(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80))
    zero = dict.fromkeys(ORIGIN_CLASSES, 0)
    pre_post = {**zero, "recycled_pre_consumer": 600, "recycled_post_consumer": 400}
    plan = {
        "inputs": [{"lot_id": "lot_a", "product": "black mass", "grams": pre_post}],
        "outputs": [{"product": "sulphate", "grams": {**zero, "recycled_pre_consumer": 590, "recycled_post_consumer": 390}}],
        "loss": {**zero, "recycled_pre_consumer": 10, "recycled_post_consumer": 10},
        "loss_total": 20,
        "loss_percent": 2.0,
    }
    cli._print_plan(plan, exact=True)
    header = next(line for line in out.getvalue().splitlines() if "lot / product" in line)
    assert "rec-pre" in header and "rec-post" in header, header
    assert header.count("recyc.") == 0, header


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ({"industrial": 7_000_000}, "ind 7,000,000"),
        ({"recycled_pre_consumer": 9_007_199_254_740_991, "artisanal": 1}, "art 1\nrec-pre 9,007,199,254,740,991"),
        ({}, "0"),
    ],
)
def test_exact_grams_one_class_per_line(amounts, expected):
    assert cli._exact_by_origin({k: amounts.get(k, 0) for k in ORIGIN_CLASSES}) == expected
