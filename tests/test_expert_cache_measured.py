"""The speed model against decodes measured with hot experts in VRAM and with n-cpu-moe at the
same VRAM budget (tests/data/expert_cache_h100.csv; issue 17's planning): the thirty-fourth
session's H100 host (both shapes, both budgets, short and at depth 8192), the thirty-third's
(the 30B shape) and the thirty-sixth's (both shapes; the 30B shape's eager also with its
copies capped, the planner's setting where uncapped copies outlast the CPU's part of a token).

On the thirty-fourth's and thirty-sixth's rows each decode's predicted middle must be within
25% of the measurement (a cache's hit rate within 10 points, from a stand-in for the
benchmark's warm-up profile). The thirty-fourth's are in sample in part: the cost an expert has
beside its bytes was fitted from its n-cpu-moe rows' CPU compute, and the link's share for the
cache's copies (app/advisor/device_rates.py, COPY_LINK_SHARE) from its eager rows; the
thirty-sixth's are out of sample (probe version 2 on that host). On every host's rows, at each
budget, the placement predicted fastest must be one that measured within 10% of the fastest:
the advisor and autotune start from that pick. The thirty-third's rows are out of sample, and
there for the picks only: its kernel probe (version 1, no cost an expert) read 0.7x what its
decodes imply, which puts every prediction 21-31% low alike.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from app.advisor.speed import Prediction, predict
from app.engine.placement import PlacementPlan
from app.synthetic.routing import REALISTIC
from tests.test_advisor_gpus import H100
from tests.test_speed_prefill import Headers, probes

ROWS = Path(__file__).parent / "data" / "expert_cache_h100.csv"
# the benchmark's warm-up profile: 128 tokens of a layer's top-8 selections
PROFILE_TOKENS = 128
SHARED_TERM = 0.9  # the locality term's correlation from one token to the next


def rows() -> list[dict[str, str]]:
    with ROWS.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def row_id(row: dict[str, str]) -> str:
    return (f"{row['session']}-{row['preset']}-{row['budget']}-{row['n_prompt']}-"
            f"{row['placement'].replace(' ', '-')}")


def warmup_profile(n_layer: int, n_expert: int, k: int) -> list[list[int]]:
    """Routing counts of a warm-up as the synthetic models' realistic routing makes them
    (app/synthetic/routing.py's REALISTIC scales): each layer's experts' bias drawn once, and
    each token's logits that plus a term carried from the token before (correlated by
    SHARED_TERM) and one new with each. A 128-token window of these: top-25% share 0.67, 0.38 of
    a token's selections repeated (the engine's telemetry on those models: 0.70 and 0.42); the
    hit rates they predict are within 3 points of those the benchmark's own warm-up predicted."""
    rng = np.random.default_rng(17)
    counts = []
    for _ in range(n_layer):
        bias, shared = rng.normal(0, REALISTIC.bias_spread, n_expert), rng.normal(0, 1, n_expert)
        layer = np.zeros(n_expert, dtype=int)
        for _ in range(PROFILE_TOKENS):
            shared = SHARED_TERM * shared + math.sqrt(1 - SHARED_TERM**2) * rng.normal(0, 1, n_expert)
            logits = bias + REALISTIC.locality * shared + REALISTIC.noise * rng.normal(0, 1, n_expert)
            layer[np.argsort(-logits)[:k]] += 1
        counts.append(layer.tolist())
    return counts


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> Headers:
    return Headers(tmp_path_factory.mktemp("cache-rows"))


def plan(row: dict[str, str]) -> PlacementPlan:
    n_prompt = int(row["n_prompt"])
    base = PlacementPlan(experts_in_ram=int(row["experts_in_ram"]), n_threads=16,
                         n_ctx=max(2048, n_prompt + 128 + 64), n_batch=512, n_ubatch=512, flash_attn="on",
                         use_mmap=row["use_mmap"] == "1")
    if not int(row["cache_slots"]):
        return base
    return dataclasses.replace(base, expert_cache="dynamic", expert_cache_slots=int(row["cache_slots"]),
                               expert_cache_policy=row["policy"],
                               expert_cache_uploads=int(row.get("uploads_cap") or 0))


def predicted(header: Headers, row: dict[str, str]) -> Prediction:
    model = header(row["preset"], int(row["layers"]))
    return predict(model, plan(row), {"CUDA0": H100}, probes(row), 16, int(row["n_prompt"]), 128,
                   profile=warmup_profile(model.n_layer, model.n_expert, model.n_expert_used))


@pytest.mark.parametrize("row", [r for r in rows() if r["session"] in ("34", "36", "37")], ids=row_id)
def test_decode_with_and_without_the_cache_is_within_25_percent(header, row: dict[str, str]) -> None:
    prediction = predicted(header, row)
    assert prediction.decode.mid == pytest.approx(float(row["decode_tps"]), rel=0.25)
    if row["hit_rate"]:  # and the hit rate within 10 points (issue 17's target)
        assert prediction.expert_hit_rate is not None
        assert prediction.expert_hit_rate.mid == pytest.approx(float(row["hit_rate"]), abs=0.10)


def test_the_placement_predicted_fastest_measured_within_10_percent_of_the_fastest(header) -> None:
    budgets: dict[tuple[str, str, str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for row in rows():
        budgets[(row["session"], row["preset"], row["budget"], row["n_prompt"])].append(
            (predicted(header, row).decode.mid, float(row["decode_tps"]), row["placement"]))
    wrong = []
    for key, measured in budgets.items():
        pick = max(measured)
        fastest = max(m for _, m, _ in measured)
        if pick[1] < 0.9 * fastest:
            wrong.append(f"{key}: picked {pick[2]} ({pick[1]} t/s), the fastest measured {fastest} t/s")
    assert not wrong
