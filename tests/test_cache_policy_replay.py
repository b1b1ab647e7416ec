"""bench/cache_policy_sim.py's replays, on traces small enough to follow by hand: the bound in
hindsight that docs/benchmarks.md sets beside the engine's policies (issue 17)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parent.parent / "bench"
SPEC = importlib.util.spec_from_file_location("cache_policy_sim", BENCH / "cache_policy_sim.py")
assert SPEC and SPEC.loader
sim = importlib.util.module_from_spec(SPEC)
sys.path.insert(0, str(BENCH))  # the script imports bench/'s own modules beside it
try:
    SPEC.loader.exec_module(sim)
finally:
    sys.path.remove(str(BENCH))


def trace_of(*tokens: int) -> list[np.ndarray]:
    """One layer, one selection a token."""
    return [np.array([[e]]) for e in tokens]


def test_in_hindsight_a_miss_comes_in_only_when_it_is_back_before_the_held_one() -> None:
    start = np.array([[0, 1, 2]])
    # 1 is back at the next token, before 0 (which goes out); 2 is never back, so it stays out
    hits, copies = sim.demand_optimum_hits(trace_of(1, 1, 0, 2, 1), np.array([[0, 3]]), 1, delay=1)
    assert (hits, copies) == (pytest.approx(2 / 5), pytest.approx(1 / 5))
    # the engine's delay: a copy usable the token after the next misses the repeat at once
    hits, _ = sim.demand_optimum_hits(trace_of(1, 1, 1, 0), start, 1, delay=2)
    assert hits == pytest.approx(1 / 4)


def test_the_bound_in_hindsight_serves_at_least_what_the_engine_s_policies_do() -> None:
    rng = np.random.default_rng(3)
    n_layer, n_expert, k, n_token = 2, 32, 4, 96
    bias = rng.normal(0, 1.0, (n_layer, n_expert))
    drift = rng.normal(0, 1, (n_layer, n_expert))
    trace = []
    for _ in range(n_token):  # skewed and carried over from token to token, as realistic routing is
        drift = 0.9 * drift + np.sqrt(1 - 0.81) * rng.normal(0, 1, drift.shape)
        logits = bias + drift + 0.5 * rng.normal(0, 1, drift.shape)
        trace.append(np.argsort(-logits, axis=1)[:, :k])
    ranking = np.argsort(-bias, axis=1)
    slots = n_expert // 4
    bound, _ = sim.demand_optimum_hits(trace, ranking, slots, delay=2)
    lru, _ = sim.lru_hits(trace, ranking, slots, 2, k, 1)
    eager, _ = sim.scored_hits(trace, ranking, slots, 4.0, 0.5, per_layer=2)
    assert bound >= max(lru, eager, sim.static_hits(trace, ranking, slots))
    assert bound <= sim.demand_optimum_hits(trace, ranking, slots, delay=1)[0] <= 1.0


def test_the_scored_policy_fed_its_selections_as_weights_is_the_engine_s() -> None:
    chosen, probs = sim.simulated_routing(n_layer=2, n_expert=32, k=4, n_token=80)
    ranking = np.argsort(-sum(probs[:16]), axis=1)
    trace = chosen[16:]
    one_hot = []
    for token in trace:
        w = np.zeros((2, 32))
        np.put_along_axis(w, token, 1.0, axis=1)
        one_hot.append(w)
    engine = sim.scored_hits(trace, ranking, 8, 4.0, 0.5, per_layer=2)
    assert sim.scored_hits(trace, ranking, 8, 4.0, 0.5, per_layer=2, weights=one_hot) == engine
    # the router's probabilities are another policy (the engine sees only the selections)
    assert sim.scored_hits(trace, ranking, 8, 4.0, 0.5, per_layer=2, weights=probs[16:]) != engine
