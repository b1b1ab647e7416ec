"""Which experts a VRAM expert cache should hold: policies replayed on a routing trace.

Captures, in llama.cpp on this machine's CPU, the experts each decoded token chose in each
layer (the routing telemetry's counts, read after every token), after a warm-up run whose
counts rank the experts as the engine's static cache does. Then replays cache policies on the
trace at several sizes (a share of each layer's experts) and prints the share of selections
each would serve from VRAM:

* static: the warm-up's most chosen experts (what the engine loads with no remembered profile);
* static, in hindsight: the trace's own most chosen experts (the best any fixed set does);
* LRU: every miss copied in, the least recently used expert out; the copy usable ``delay``
  tokens later (2: patch 0004 copies on its own thread during the next token and maps the
  expert at the step after), at most ``uploads`` copies a layer a token;
* admit after 2: an expert copied in at its second miss within 64 tokens (patch 0004's first
  policy), the least recently used expert not hit in the last token out;
* scored: patch 0004's policy since the fourteenth session: each expert's selections, each
  halved in weight after ``half_life`` tokens; the best-scored expert not held replaces the
  lowest-scored held one not hit in the last token when it scores ``margin`` more (held
  experts start at ``margin``), ``per_layer`` a layer a token, usable two tokens after the
  miss; with the engine's two settings (app/engine/expert_cache.py's COPY_POLICIES: thrifty,
  eager).

In hindsight: Belady's choice, knowing the whole trace, for a cache that copies only what a
token missed (any number a token; usable the next token, or the one after as in the engine):
about the most a policy of the engine's kind can serve at that size.

``--caps``: eager again with its copies a token capped (the engine's max_uploads: the largest
gains first), the cap given a layer.

Each cell: share of selections served from VRAM / experts copied a layer and token / experts
read from RAM a layer and token (misses plus copies: a copy reads an expert's bytes as a miss
does, so a policy whose copies exceed the misses it saves reads more than the static set).

Routing skew and locality come from the model (``python -m app.synthetic --routing realistic``
for Qwen3-like routing). Example:

    python bench/cache_policy_sim.py --model /tmp/q30-4l.gguf --tokens 256
"""

from __future__ import annotations

import argparse
import os
from collections import deque

# llama.cpp's libraries before numpy's (gguf imports numpy): see bench/engine_overhead.py
import llama_cpp  # noqa: I001
import numpy as np
from expert_cache import Loaded, Placement  # bench/'s own, beside this script

from app.engine.expert_cache import COPY_POLICIES
from app.gguf.info import read_model
from app.synthetic.routing import REALISTIC


def capture(path: str, n_warm: int, n_tokens: int, threads: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(warm-up counts [layer][expert], trace: per token, the chosen experts [layer][k])."""
    info = read_model(path)
    n_layer, n_expert = info.n_layer, info.n_expert
    model = Loaded(path, Placement("ram", n_layer), n_layer, threads, n_warm + n_tokens + 256, None)
    rng = np.random.default_rng(7)

    def step(tokens: list[int], pos0: int) -> int:
        logits = model.decode(tokens, pos0, True)
        assert logits is not None
        return int(np.argmax(logits))

    def counts() -> np.ndarray:
        return np.array(model.counts(n_expert), dtype=np.int64)

    token = step([int(x) for x in rng.integers(1, 30000, 64)], 0)
    for i in range(n_warm):
        token = step([token], 64 + i)
    warm = counts()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(model.ctx), True)
    token = step([int(x) for x in rng.integers(1, 30000, 64)], 0)
    trace, before = [], counts()
    for i in range(n_tokens):
        token = step([token], 64 + i)
        now = counts()
        trace.append(np.stack([np.nonzero(row)[0] for row in now - before]))
        before = now
    model.close()
    return warm, trace


def static_hits(trace: list[np.ndarray], ranking: np.ndarray, slots: int) -> float:
    held = [set(row[:slots]) for row in ranking]
    hits = sum(len(held[il].intersection(t[il])) for t in trace for il in range(len(held)))
    return hits / sum(t.size for t in trace)


def lru_hits(trace: list[np.ndarray], start: np.ndarray, slots: int, delay: int, uploads: int,
             admit_after: int = 1, window: int = 64) -> tuple[float, float]:
    """(hit rate, copies per layer and token) of an LRU cache filled with ``start``'s first
    ``slots`` experts, copies usable ``delay`` tokens after the miss."""
    n_layer = len(start)
    hits = copies = 0
    for il in range(n_layer):
        last_use = {int(e): -1 for e in start[il][:slots]}
        pending: deque[tuple[int, int]] = deque()  # (usable from token, expert)
        misses: dict[int, list[int]] = {}
        for t, chosen in enumerate(trace):
            while pending and pending[0][0] <= t:
                _, e = pending.popleft()
                if len(last_use) >= slots:  # out: the least recently used, not hit last token
                    victims = [x for x in last_use if last_use[x] < t - 1] or list(last_use)
                    del last_use[min(victims, key=lambda x: last_use[x])]
                last_use[e] = t - 1
            in_flight = {e for _, e in pending}
            budget = uploads
            for e in map(int, chosen[il]):
                if e in last_use:
                    hits += 1
                    last_use[e] = t
                    continue
                seen = [s for s in misses.get(e, []) if s > t - window] + [t]
                misses[e] = seen
                if len(seen) >= admit_after and e not in in_flight and budget > 0:
                    pending.append((t + delay, e))
                    in_flight.add(e)
                    budget -= 1
                    copies += 1
    total = sum(t.size for t in trace)
    return hits / total, copies / (n_layer * len(trace))


def demand_optimum_hits(trace: list[np.ndarray], start: np.ndarray, slots: int,
                        delay: int = 1) -> tuple[float, float]:
    """(hit rate, copies per layer and token) of Belady's choice in hindsight for a cache that
    copies only experts a token missed (no copy foretells an expert not yet chosen), any number a
    token: a missed expert comes in, usable ``delay`` tokens later, when its next selection comes
    before the next of the held expert used furthest ahead, which goes out. About the most any
    policy of patch 0004's kind can serve (with ``delay`` 1, past the engine's 2)."""
    n_layer, n_token = len(start), len(trace)
    hits = copies = 0
    for il in range(n_layer):
        uses: dict[int, list[int]] = {}
        for t, chosen in enumerate(trace):
            for e in map(int, chosen[il]):
                uses.setdefault(e, []).append(t)

        def next_use(e: int, t: int, uses: dict[int, list[int]] = uses) -> int:
            return next((u for u in uses.get(e, []) if u >= t), n_token + 1)

        held = {int(e) for e in start[il][:slots]}
        pending: list[tuple[int, int]] = []  # (usable from token, expert)
        for t, chosen in enumerate(trace):
            held |= {e for when, e in pending if when == t}
            pending = [(when, e) for when, e in pending if when > t]
            in_flight = {e for _, e in pending}
            for e in map(int, chosen[il]):
                if e in held:
                    hits += 1
                    continue
                if e in in_flight or not held:
                    continue
                victim = max(held, key=lambda x: next_use(x, t + 1))
                if next_use(e, t + delay) < next_use(victim, t + 1):
                    held.discard(victim)
                    pending.append((t + delay, e))
                    in_flight.add(e)
                    copies += 1
    return hits / sum(t.size for t in trace), copies / (n_layer * n_token)


def scored_hits(trace: list[np.ndarray], start: np.ndarray, slots: int, half_life: float = 16.0,
                margin: float = 2.0, delay: int = 2, per_layer: int = 1,
                uploads: float | None = None, weights: list[np.ndarray] | None = None) -> tuple[float, float]:
    """(hit rate, copies per layer and token) of the engine's scored policy (llama-moe-cache.h's
    observe / admission / end_step), filled with ``start``'s first ``slots`` experts, at most
    ``per_layer`` copies a layer a token and ``uploads`` a token over all layers (the engine's
    max_uploads; None: no cap), the largest gains first (a newcomer's score over the expert it
    evicts). ``weights``: what each token adds to each expert's score, (layers, experts) a token,
    instead of 1 for each expert it chose (the engine's way)."""
    n_layer, n_expert = len(start), len(start[0])
    growth = 2.0 ** (1.0 / half_life)
    hits = copies = 0
    scores = [np.zeros(n_expert) for _ in range(n_layer)]
    unit = 1.0
    held = [{int(e): -1 for e in start[il][:slots]} for il in range(n_layer)]  # expert -> last hit
    for il in range(n_layer):
        scores[il][list(held[il])] = margin
    pending: list[deque[tuple[int, int]]] = [deque() for _ in range(n_layer)]  # (usable from, expert)
    for t, chosen in enumerate(trace):
        unit *= growth
        for il in range(n_layer):
            while pending[il] and pending[il][0][0] <= t:
                held[il][pending[il].popleft()[1]] = t  # kept through the token it arrives in
            if weights is not None:
                scores[il] += unit * weights[t][il]
            for e in map(int, chosen[il]):
                if weights is None:
                    scores[il][e] += unit
                if e in held[il]:
                    hits += 1
                    held[il][e] = t
        # each layer's admissions in turn (its best newcomers against its lowest-scored held
        # experts not hit this token), one slot kept out of the copies; then the largest gains
        candidates = []
        for il in range(n_layer):
            score, arriving = scores[il], {e for _, e in pending[il]}
            free = [e for e in range(n_expert) if e not in held[il] and e not in arriving and score[e] > 0]
            out = sorted(free, key=lambda e: -score[e])
            victims = sorted((e for e in held[il] if held[il][e] < t), key=lambda e: score[e])
            room = slots - 1 - len(pending[il])
            for best, victim in list(zip(out, victims, strict=False))[:max(0, min(per_layer, room))]:
                gain = score[best] - score[victim]
                if gain <= margin * unit:
                    break
                candidates.append((gain, il, best, victim))
        candidates.sort(key=lambda c: -c[0])
        for _, il, best, victim in candidates[:n_layer * per_layer if uploads is None else int(uploads)]:
            del held[il][victim]
            pending[il].append((t + delay, best))
            copies += 1
    total = sum(t.size for t in trace)
    return hits / total, copies / (n_layer * len(trace))


def simulated_routing(n_layer: int = 8, n_expert: int = 128, k: int = 8, n_token: int = 320,
                      carried: float = 0.9, seed: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Routing drawn in numpy the way app/synthetic/routing.py's REALISTIC scales make it (a bias
    per layer and expert, a term carried from token to token with correlation ``carried``, one new
    each token): each token's selections, (layers, k), and its router probabilities times k (the
    softmax over every expert the router computes before its top-k), (layers, experts)."""
    rng = np.random.default_rng(seed)
    bias = rng.normal(0, REALISTIC.bias_spread, (n_layer, n_expert))
    shared = rng.normal(0, 1, (n_layer, n_expert))
    chosen, probs = [], []
    for _ in range(n_token):
        shared = carried * shared + np.sqrt(1 - carried**2) * rng.normal(0, 1, shared.shape)
        logits = bias + REALISTIC.locality * shared + REALISTIC.noise * rng.normal(0, 1, shared.shape)
        chosen.append(np.argsort(-logits, axis=1)[:, :k])
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs.append(k * p / p.sum(axis=1, keepdims=True))
    return chosen, probs


def router_probs_front(n_warm: int = 64) -> None:
    """The scored policy's best hit rates for the copies it makes (over its settings), fed the
    selections (the engine's way) or the router's probabilities, on simulated routing."""
    chosen, probs = simulated_routing()
    trace, weights = chosen[n_warm:], probs[n_warm:]
    n_layer, k = trace[0].shape
    n_expert = probs[0].shape[1]
    warm = np.stack([np.bincount(np.concatenate([t[il] for t in chosen[:n_warm]]), minlength=n_expert)
                     for il in range(n_layer)])
    ranking = np.argsort(-warm, axis=1, kind="stable")
    repeats = np.mean([len(set(trace[t][il]) & set(trace[t - 1][il])) / k
                       for t in range(1, len(trace)) for il in range(n_layer)])
    print(f"simulated routing: {n_layer} layers, top-{k} of {n_expert}, {len(trace)} tokens; "
          f"{repeats:.2f} of a token's selections repeat the token before's")
    print("| experts held | fed | share served / copies a layer and token, the best setting for its copies |")
    print("|---|---|---|")
    settings = [(h, m, p) for h in (2.0, 4.0, 8.0, 16.0) for m in (0.25, 0.5, 1.0, 2.0) for p in (1, 2)]
    for share in (1 / 8, 1 / 4):
        slots = int(n_expert * share)
        for fed, w in (("selections", None), ("router probabilities", weights)):
            runs = sorted((scored_hits(trace, ranking, slots, h, m, per_layer=p, weights=w), (h, m, p))
                          for h, m, p in settings)
            front, best = [], -1.0
            for (rate, copies), (h, m, p) in sorted(runs, key=lambda r: r[0][1]):
                if rate > best:
                    best = rate
                    front.append(f"{rate:.1%} / {copies:.2f} (half-life {h:g}, margin {m:g}, {p} a layer)")
            print(f"| {share:.1%} ({slots}) | {fed} | " + "; ".join(front[-6:]) + " |")
        optimum = demand_optimum_hits(trace, ranking, slots, 2)
        print(f"| {share:.1%} ({slots}) | in hindsight | {optimum[0]:.1%} / {optimum[1]:.2f} |")


def cell(rate: float, copies: float, k: int) -> str:
    return f"{rate:.1%} / {copies:.2f} / {(1 - rate) * k + copies:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="the model whose routing is captured (or --trace's)")
    parser.add_argument("--router-probs", action="store_true",
                        help="instead: the scored policy fed the router's probabilities against its "
                             "selections, on routing simulated in numpy")
    parser.add_argument("--warm", type=int, default=64, help="warm-up tokens decoded for the ranking")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trace", help="an .npz to replay instead of capturing (written when missing)")
    parser.add_argument("--caps", type=float, nargs="*", default=[],
                        help="also eager with its copies capped at these many a layer and token, "
                             "averaged over the layers (the engine's max_uploads / the cached layers)")
    args = parser.parse_args()
    if args.router_probs:
        router_probs_front()
        return 0
    if not args.model:
        parser.error("give --model (or --router-probs)")
    if args.trace and os.path.exists(args.trace):
        saved = np.load(args.trace)
        warm, trace = saved["warm"], list(saved["trace"])
    else:
        warm, trace = capture(args.model, args.warm, args.tokens, args.threads)
        if args.trace:
            np.savez(args.trace, warm=warm, trace=np.stack(trace))
    n_expert = warm.shape[1]
    ranking = np.argsort(-warm, axis=1, kind="stable")
    totals = np.stack([np.bincount(np.concatenate([t[il] for t in trace]), minlength=n_expert)
                       for il in range(len(warm))])
    hindsight = np.argsort(-totals, axis=1, kind="stable")
    k = trace[0].shape[1]
    print(f"{args.model}: {len(warm)} layers, top-{k} of {n_expert}; warm-up {args.warm} tokens, "
          f"trace {args.tokens} tokens")
    print("| experts held | static (warm-up) | static (hindsight) | LRU, every miss | "
          "admit at the 2nd miss (first policy) | scored, thrifty (engine) | scored, eager (engine) | "
          "in hindsight, copies usable next token | in hindsight, the token after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for share in (1 / 16, 1 / 8, 1 / 4, 1 / 2):
        slots = int(n_expert * share)
        cells = [cell(static_hits(trace, ranking, slots), 0.0, k),
                 cell(static_hits(trace, hindsight, slots), 0.0, k),
                 cell(*lru_hits(trace, ranking, slots, 2, k, 1), k),
                 cell(*lru_hits(trace, ranking, slots, 2, 2, 2), k),
                 *(cell(*scored_hits(trace, ranking, slots, p.half_life, p.margin, per_layer=p.per_layer), k)
                   for p in (COPY_POLICIES["thrifty"], COPY_POLICIES["eager"])),
                 *(cell(*demand_optimum_hits(trace, ranking, slots, delay), k) for delay in (1, 2))]
        print(f"| {share:.1%} ({slots}) | " + " | ".join(cells) + " |")
    if args.caps:
        eager = COPY_POLICIES["eager"]
        n_layer = len(warm)
        print("\neager, its copies capped (copies a token over all layers: cap x layers)")
        print("| experts held | " + " | ".join(f"cap {c:g} a layer" for c in args.caps) + " |")
        print("|---" * (len(args.caps) + 1) + "|")
        for share in (1 / 8, 1 / 4):
            slots = int(n_expert * share)
            cells = [cell(*scored_hits(trace, ranking, slots, eager.half_life, eager.margin,
                                       per_layer=eager.per_layer, uploads=round(c * n_layer)), k)
                     for c in args.caps]
            print(f"| {share:.1%} ({slots}) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
