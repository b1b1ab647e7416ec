"""The synthetic MoE writer: files llama.cpp loads, chats with, tokenizes and routes as designed."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import llama_cpp
import numpy as np
import pytest

from app import synthetic
from app.engine import ggml_backend
from app.engine.routing_stats import RoutingCounters, routing_counters, routing_stats
from app.synthetic import SyntheticSpec, estimate_size_bytes, weights, write_synthetic_model
from app.synthetic.routing import ring_positions

ROOT = Path(__file__).resolve().parents[1]
PROMPT = (
    "Mixture of experts models route every token to a few experts in each layer. The router "
    "chooses the experts, and the experts that are chosen most often are the hot experts. "
    "Hello! How are you today? I am fine, thank you. What would you like to talk about? "
    "Memory, bandwidth, prefill, decode, tokens per second, layers, experts and shards. "
) * 3
SENTENCE = "The user asks a question, and the assistant answers it: 42 — «bien sûr»."


def _load(path: Path, **kwargs: Any) -> llama_cpp.Llama:
    params: dict[str, Any] = dict(n_gpu_layers=0, n_ctx=256, n_threads=2, verbose=False)
    return llama_cpp.Llama(str(path), **(params | kwargs))


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    return reader.fields[key].contents()


def _last_logits(llm: llama_cpp.Llama, text: str) -> np.ndarray:
    llm.reset()
    llm.eval(llm.tokenize(text.encode(), add_bos=False))
    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).copy()


# --- the file as written -----------------------------------------------------------------------


def test_file_holds_qwen3moe_keys_and_tensors(tiny_moe_gguf: Path) -> None:
    spec = SyntheticSpec.preset("tiny")
    reader = gguf.GGUFReader(tiny_moe_gguf)

    assert _field(reader, "general.architecture") == "qwen3moe"
    assert _field(reader, "qwen3moe.block_count") == spec.n_layer
    assert _field(reader, "qwen3moe.expert_count") == 8
    assert _field(reader, "qwen3moe.expert_used_count") == 2
    assert _field(reader, "qwen3moe.expert_feed_forward_length") == spec.n_ff_exp
    assert _field(reader, "qwen3moe.attention.key_length") == spec.head_dim
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "qwen2"
    assert len(_field(reader, "tokenizer.ggml.tokens")) == spec.n_vocab
    assert "<|im_start|>" in _field(reader, "tokenizer.chat_template")

    tensors = {t.name: t for t in reader.tensors}
    e, ff, q = spec.n_embd, spec.n_ff_exp, spec.n_head * spec.head_dim
    expected = {
        "token_embd.weight": ([e, spec.n_vocab], gguf.GGMLQuantizationType.F16),
        "output.weight": ([e, spec.n_vocab], gguf.GGMLQuantizationType.Q4_0),
        "blk.0.attn_q.weight": ([e, q], gguf.GGMLQuantizationType.Q4_0),
        "blk.0.attn_output.weight": ([q, e], gguf.GGMLQuantizationType.Q4_0),
        "blk.0.attn_k_norm.weight": ([spec.head_dim], gguf.GGMLQuantizationType.F32),
        "blk.0.ffn_gate_inp.weight": ([e, 8], gguf.GGMLQuantizationType.F32),
        "blk.3.ffn_gate_exps.weight": ([e, ff, 8], gguf.GGMLQuantizationType.Q4_0),
        "blk.3.ffn_up_exps.weight": ([e, ff, 8], gguf.GGMLQuantizationType.Q4_0),
        "blk.3.ffn_down_exps.weight": ([ff, e, 8], gguf.GGMLQuantizationType.Q4_0),
    }
    for name, (shape, qtype) in expected.items():
        assert list(tensors[name].shape) == shape, name
        assert tensors[name].tensor_type == qtype, name
    assert len(tensors) == 3 + spec.n_layer * 12
    norm = tensors["blk.2.ffn_norm.weight"].data
    assert np.all(np.abs(norm - 1.0) < 0.2)
    assert sum(int(t.n_bytes) for t in reader.tensors) == estimate_size_bytes(spec)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    spec = SyntheticSpec.preset("tiny", n_layer=2, quant="Q8_0")
    (a,) = write_synthetic_model(tmp_path / "a.gguf", spec)
    (b,) = write_synthetic_model(tmp_path / "b.gguf", spec)
    (c,) = write_synthetic_model(
        tmp_path / "c.gguf", SyntheticSpec.preset("tiny", n_layer=2, quant="Q8_0", seed=1)
    )
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    def stop_halfway(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_synthetic_model(
            tmp_path / "m.gguf", SyntheticSpec.preset("tiny", split=2), progress=stop_halfway
        )
    assert list(tmp_path.iterdir()) == []


def test_invalid_spec_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="n_expert_used"):
        SyntheticSpec.preset("tiny", n_expert_used=9)
    with pytest.raises(ValueError, match="multiples of 32"):
        SyntheticSpec.preset("tiny", n_embd=100)
    with pytest.raises(ValueError, match="unknown preset"):
        SyntheticSpec.preset("qwen4")


# --- llama.cpp loads, chats and tokenizes ------------------------------------------------------


def test_chat_with_the_chat_template(tiny_moe_gguf: Path) -> None:
    llm = _load(tiny_moe_gguf)
    messages: Any = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello, who are you?"},
    ]
    reply: Any = llm.create_chat_completion(messages=messages, max_tokens=6, temperature=0.0)

    rendered = (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHello, who are you?<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt_tokens = llm.tokenize(rendered.encode(), add_bos=False, special=True)
    assert reply["usage"]["prompt_tokens"] == len(prompt_tokens)
    assert reply["usage"]["completion_tokens"] > 0
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert np.isfinite(_last_logits(llm, SENTENCE)).all()


@pytest.mark.parametrize("quant", ["Q8_0", "F16"])
def test_other_quants_give_sane_logits(tmp_path: Path, quant: str) -> None:
    (path,) = write_synthetic_model(tmp_path / "m.gguf", SyntheticSpec.preset("tiny", quant=quant))
    logits = _last_logits(_load(path), SENTENCE)
    assert np.isfinite(logits).all()
    assert 0.5 < logits.std() < 20


SUPER_BLOCK_TYPES = sorted(set(synthetic.spec.EXPERT_QUANT_TYPES) - set(synthetic.QUANT_TYPES) - {"MXFP4"})


@pytest.mark.parametrize("quant", SUPER_BLOCK_TYPES)
def test_k_and_i_quant_experts_have_the_planned_rms_and_no_bias(quant: str) -> None:
    qtype = gguf.GGMLQuantizationType[quant]
    t = synthetic.TensorPlan("blk.0.ffn_up_exps.weight", (256, 64, 4), qtype, "reader", rms=0.02)
    rows = weights._random_quant_blocks(np.random.default_rng(1), t, t.n_rows)
    values = gguf.quants.dequantize(rows.reshape(t.n_rows, -1), qtype)
    assert np.isfinite(values).all()
    assert np.sqrt(np.mean(np.square(values))) == pytest.approx(0.02, rel=0.15)
    # each block may carry a bias near its RMS (k-quants subtract a positive minimum); the
    # blocks' random signs cancel it over the 256 here, to about 1/16 of that
    assert abs(values.mean()) < 0.25 * 0.02


@pytest.mark.parametrize("quant", SUPER_BLOCK_TYPES)
def test_k_and_i_quant_experts_give_sane_logits(tmp_path: Path, quant: str) -> None:
    spec = SyntheticSpec.preset("tiny", n_embd=256, n_ff_exp=256, expert_quant=quant)
    (path,) = write_synthetic_model(tmp_path / "m.gguf", spec)
    experts = [t for t in gguf.GGUFReader(path).tensors if "_exps" in t.name]
    assert {t.tensor_type.name for t in experts} == {quant}
    logits = _last_logits(_load(path), SENTENCE)
    assert np.isfinite(logits).all()
    assert 0.5 < logits.std() < 20


def test_super_block_experts_need_widths_of_whole_super_blocks() -> None:
    with pytest.raises(ValueError, match="multiples of 256"):
        SyntheticSpec.preset("tiny", expert_quant="Q4_K")  # n_embd 128


def test_mixtral_style_llama_arch_generates(tmp_path: Path) -> None:
    (path,) = write_synthetic_model(tmp_path / "m.gguf", SyntheticSpec.preset("tiny-mixtral"))
    llm = _load(path)
    assert llm.metadata["general.architecture"] == "llama"
    out: Any = llm.create_completion("The quick brown fox", max_tokens=4, temperature=0.0)
    assert out["usage"]["completion_tokens"] > 0


def test_real_layer_shapes_load_and_run(tmp_path: Path) -> None:
    # one layer of Qwen3-30B-A3B at full width (small vocab keeps the file at ~0.35 GB)
    spec = SyntheticSpec.preset("qwen3-30b-a3b", n_layer=1, n_vocab=512)
    (path,) = write_synthetic_model(tmp_path / "m.gguf", spec)
    llm = _load(path)
    assert llm.n_embd() == 2048
    assert np.isfinite(_last_logits(llm, "Hello world")).all()


TEXTS = [
    "héllo wörld",
    "Grüße aus Köln — naïve café",
    "你好，世界",
    "こんにちは 🙂🚀",
    "Привет\n\tмир",
    "emoji 👩‍👩‍👧 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "  leading spaces, trailing\n\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trips_any_text(tiny_moe_gguf: Path, text: str) -> None:
    llm = _load(tiny_moe_gguf, vocab_only=True)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
    assert llm.detokenize(tokens).decode() == text


def test_tokenizer_merges_and_special_tokens(tiny_moe_gguf: Path) -> None:
    llm = _load(tiny_moe_gguf, vocab_only=True)
    text = b"The user asks a question and the assistant answers it."
    assert len(llm.tokenize(text, add_bos=False)) < len(text) / 2  # merges are used

    specials = b"<|im_start|>user\nhi<|im_end|><think></think><|endoftext|>"
    tokens = llm.tokenize(specials, add_bos=False, special=True)
    pieces = [llm.detokenize([t], special=True) for t in tokens]
    for piece in (b"<|im_start|>", b"<|im_end|>", b"<think>", b"</think>", b"<|endoftext|>"):
        assert piece in pieces
    assert llm.token_eos() == tokens[pieces.index(b"<|im_end|>")]


def test_qwen_sized_vocab_uses_qwen_ids_and_emits_no_padding(tmp_path: Path) -> None:
    spec = SyntheticSpec.preset("tiny", n_vocab=151936)
    (path,) = write_synthetic_model(tmp_path / "m.gguf", spec)
    llm = _load(path)
    assert llm.n_vocab() == 151936
    specials = b"<|endoftext|><|im_start|><|im_end|><think></think>"
    tokens = llm.tokenize(specials, add_bos=False, special=True)
    assert tokens == [151643, 151644, 151645, 151667, 151668]
    assert llm.token_eos() == 151645

    # random output rows must not favour the ~151k unused [PADn] tokens (they print nothing)
    logits = _last_logits(llm, SENTENCE)
    padding = np.r_[1000:151643, 151669:151936]  # the learned tokens end well before 1000
    assert not set(np.argsort(logits)[-50:]) & set(padding)
    assert logits[padding].max() < logits.max() - 10


# --- split files -------------------------------------------------------------------------------


def test_split_model_loads_from_first_shard(split_moe_gguf: list[Path]) -> None:
    names = [f"tiny-moe-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [p.name for p in split_moe_gguf] == names
    readers = [gguf.GGUFReader(p) for p in split_moe_gguf]
    for no, reader in enumerate(readers):
        assert _field(reader, "split.no") == no
        assert _field(reader, "split.count") == 3
        assert _field(reader, "split.tensors.count") == sum(len(r.tensors) for r in readers)
        assert len(reader.tensors) > 0
    assert "tokenizer.ggml.tokens" in readers[0].fields
    assert set(readers[1].fields) == {"split.no", "split.count", "split.tensors.count"} | {
        k for k in readers[1].fields if k.startswith("GGUF.")
    }

    llm = _load(split_moe_gguf[0])
    out: Any = llm.create_completion("Hello", max_tokens=3, temperature=0.0)
    assert out["usage"]["completion_tokens"] > 0


# --- routing skew, measured in llama.cpp -------------------------------------------------------


class _TensorHead(ctypes.Structure):
    """The leading fields of ggml.h's struct ggml_tensor, up to its name."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
    ]


def _routing_counts(path: Path, n_layer: int, n_expert: int) -> tuple[np.ndarray, int]:
    """Decode PROMPT once and count, per layer, which experts llama.cpp's router selected."""
    counts = np.zeros((n_layer, n_expert), dtype=np.int64)

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_tensor(pointer: int, ask: bool, _user: int) -> bool:
        tensor = ctypes.cast(pointer, ctypes.POINTER(_TensorHead)).contents
        name = tensor.name.decode()
        if not name.startswith("ffn_moe_topk-"):
            return not ask  # ask: we do not want it; not ask: carry on
        if not ask:  # a strided view of the argsort: one row of expert ids per token
            layer, n_used = int(name.rsplit("-", 1)[1]), tensor.ne[0]
            for row in range(tensor.ne[1]):
                address = tensor.data + row * tensor.nb[1]
                counts[layer] += np.bincount(
                    (ctypes.c_int32 * n_used).from_address(address), minlength=n_expert
                )
        return True

    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
    ctx_params = llama_cpp.llama_context_default_params()
    ctx_params.n_ctx = ctx_params.n_batch = ctx_params.n_ubatch = 1024
    ctx_params.n_threads = ctx_params.n_threads_batch = 2
    ctx_params.cb_eval = on_tensor
    ctx = llama_cpp.llama_init_from_model(model, ctx_params)
    try:
        data = PROMPT.encode()
        tokens = (llama_cpp.llama_token * 1024)()
        n = llama_cpp.llama_tokenize(
            llama_cpp.llama_model_get_vocab(model), data, len(data), tokens, 1024, False, False
        )
        assert 100 < n <= 1024
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, n)) == 0
    finally:
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    return counts, n


def test_routing_skew_concentrates_selections_on_the_hot_experts(
    tiny_moe_gguf: Path, skewed_moe_gguf: Path
) -> None:
    spec = SyntheticSpec.preset("tiny")
    hot = np.array(_field(gguf.GGUFReader(skewed_moe_gguf), "moedesk.synthetic.hot_experts"))
    hot = hot.reshape(spec.n_layer, -1)
    assert hot.tolist() == synthetic.hot_experts(SyntheticSpec.preset("tiny", routing_skew=1.0))

    uniform, n_tokens = _routing_counts(tiny_moe_gguf, spec.n_layer, spec.n_expert)
    skewed, _ = _routing_counts(skewed_moe_gguf, spec.n_layer, spec.n_expert)
    # the last layer only computes the token whose logits are wanted
    full = [layer for layer in range(spec.n_layer) if uniform[layer].sum() == 2 * n_tokens]
    assert len(full) == spec.n_layer - 1

    for layer in full:
        top2_uniform = np.sort(uniform[layer])[-2:].sum() / uniform[layer].sum()
        hot_skewed = skewed[layer][hot[layer]].sum() / skewed[layer].sum()
        # measured: top-2 share 0.31-0.35 (0.25 is perfectly even); hot share 0.95-1.0
        assert top2_uniform < 0.45, (layer, uniform[layer])
        assert hot_skewed > 0.85, (layer, skewed[layer])


# --- realistic routing, measured in llama.cpp ---------------------------------------------------


def _decode_routing(
    path: Path, prompts: list[list[int]], n_gen: int
) -> tuple[RoutingCounters, list[list[int]]]:
    """Greedy-decode ``n_gen`` tokens after each prompt (a fresh context each) and return the
    routing counted over the decoded tokens only, pooled, and the tokens each run chose."""
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
    n_layer = llama_cpp.llama_model_n_layer(model)
    n_expert = _field(gguf.GGUFReader(path), "qwen3moe.expert_count")
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    pooled: RoutingCounters | None = None
    outputs = []
    try:
        for prompt in prompts:
            ctx_params = llama_cpp.llama_context_default_params()
            ctx_params.n_ctx = ctx_params.n_batch = ctx_params.n_ubatch = 256
            # one thread: a one-token decode of this model is too small to share, and on a busy
            # machine two threads waiting on each other made it 40x slower (19 s vs 0.4 s)
            ctx_params.n_threads = ctx_params.n_threads_batch = 1
            ctx = llama_cpp.llama_init_from_model(model, ctx_params)
            try:
                ggml_backend.routing_enable(ctx, True)
                tokens = (llama_cpp.llama_token * len(prompt))(*prompt)
                assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, len(prompt))) == 0
                before = routing_counters(ctx, n_layer, n_expert)
                out: list[int] = []
                for _ in range(n_gen):
                    logits = llama_cpp.llama_get_logits_ith(ctx, -1)
                    out.append(int(np.argmax(np.ctypeslib.as_array(logits, shape=(n_vocab,)))))
                    token = (llama_cpp.llama_token * 1)(out[-1])
                    assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(token, 1)) == 0
                run = routing_counters(ctx, n_layer, n_expert) - before
            finally:
                llama_cpp.llama_free(ctx)
            pooled = run if pooled is None else pooled + run
            outputs.append(out)
    finally:
        llama_cpp.llama_model_free(model)
    assert pooled is not None
    return pooled, outputs


def _random_prompts(n_vocab: int, count: int) -> list[list[int]]:
    """Prompts of 32 random tokens of the whole vocabulary (special and unused ones too)."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, n_vocab, 32).tolist() for _ in range(count)]


def test_realistic_routing_is_skewed_and_local_like_qwen3(realistic_moe_gguf: Path, tmp_path: Path) -> None:
    # Published for Qwen3-30B-A3B / 235B-A22B (128 experts, top-8): the top 25% of experts take
    # ~60% of a layer's selections, ~45% of a token's selections repeat on the next token.
    # Measured here (4 layers, 2 x 128 tokens): pooled top-25% share 0.61-0.68 per layer,
    # repeat share 0.38-0.46 per layer. Per-layer figures over 256 tokens scatter by about
    # +-0.03 between layers and prompts, hence the bands; uniform routing reads 0.06 and
    # 0.39-0.44 (chance: 0.0625, and ~0.36 for the top-25% share of 2 x 128 tokens).
    spec = SyntheticSpec.preset("tiny-realistic")
    assert _field(gguf.GGUFReader(realistic_moe_gguf), "moedesk.synthetic.routing") == "realistic"
    prompts = _random_prompts(spec.n_vocab, 2)
    realistic, outputs = _decode_routing(realistic_moe_gguf, prompts, 128)
    stats = routing_stats(realistic, spec.n_expert_used)
    assert stats.tokens == 256
    assert all(0.55 < s < 0.75 for s in stats.top_quarter_share), stats.describe()
    assert all(0.32 < r < 0.52 for r in stats.repeat_share), stats.describe()
    assert 0.37 < stats.mean_repeat_share < 0.47, stats.describe()

    # greedy decoding walks the token ring one step per token, so it never falls into a loop
    positions, ring = ring_positions(spec.n_vocab, spec.seed)
    for prompt, out in zip(prompts, outputs, strict=True):
        steps = np.diff(positions[[prompt[-1], *out]]) % ring
        assert (steps == 1).mean() > 0.95, steps
        assert len(set(out)) == len(out)

    uniform_spec = SyntheticSpec.preset("tiny-realistic", routing="uniform")
    assert uniform_spec.closed_dims < spec.closed_dims
    (uniform_path,) = write_synthetic_model(tmp_path / "uniform.gguf", uniform_spec)
    uniform, _ = _decode_routing(uniform_path, prompts, 128)
    chance = routing_stats(uniform, spec.n_expert_used)
    assert chance.mean_repeat_share < 0.12, chance.describe()
    assert chance.mean_top_quarter_share < 0.5, chance.describe()


def test_realistic_routing_needs_room_in_the_hidden_state() -> None:
    with pytest.raises(ValueError, match="realistic routing needs n_embd >= 256"):
        SyntheticSpec.preset("tiny", routing="realistic")
    with pytest.raises(ValueError, match="routing 'clever'"):
        SyntheticSpec.preset("tiny", routing="clever")


# --- real shapes, sized without writing them ---------------------------------------------------


def _q4_0(n: int) -> int:
    return n // 32 * 18


@pytest.mark.parametrize(
    ("preset", "n_layer", "n_embd", "n_head", "n_ff", "gib"),
    [
        ("qwen3-30b-a3b", 48, 2048, 32, 768, 16.45),
        ("qwen3-235b-a22b", 94, 4096, 64, 1536, 124.2),
    ],
)
def test_real_presets_have_real_sizes(
    preset: str, n_layer: int, n_embd: int, n_head: int, n_ff: int, gib: float
) -> None:
    spec = SyntheticSpec.preset(preset)
    assert (spec.n_layer, spec.n_embd, spec.n_head, spec.n_ff_exp) == (
        n_layer,
        n_embd,
        n_head,
        n_ff,
    )
    assert (spec.n_head_kv, spec.head_dim, spec.n_expert, spec.n_expert_used) == (4, 128, 128, 8)
    assert spec.n_vocab == 151936 and spec.n_ctx_train == 40960

    q, kv, vocab = n_head * 128, 4 * 128, 151936
    layer = (
        2 * _q4_0(n_embd * q)
        + 2 * _q4_0(n_embd * kv)  # q, output; k, v
        + 4 * (2 * n_embd + 2 * 128)  # attn/ffn norms, q/k norms (F32)
        + 4 * n_embd * 128  # router (F32)
        + 3 * _q4_0(n_embd * n_ff * 128)
    )  # gate, up, down experts
    total = 2 * n_embd * vocab + _q4_0(n_embd * vocab) + 4 * n_embd + n_layer * layer
    assert estimate_size_bytes(spec) == total
    # 30B: 16.45 GiB (17.67 GB), the size of the benchmark model in the device recipes
    assert abs(total / 2**30 - gib) < 0.05


def test_overrides_change_the_size_as_expected() -> None:
    base = estimate_size_bytes(SyntheticSpec.preset("qwen3-30b-a3b", n_layer=2))
    q8 = estimate_size_bytes(SyntheticSpec.preset("qwen3-30b-a3b", n_layer=2, quant="Q8_0"))
    fewer = estimate_size_bytes(SyntheticSpec.preset("qwen3-30b-a3b", n_layer=2, n_expert=64))
    assert base < q8 < 2 * base
    assert fewer < base


# --- the command -------------------------------------------------------------------------------


def test_command_writes_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = synthetic.main(
        [
            str(tmp_path / "m.gguf"),
            "--preset",
            "tiny",
            "--layers",
            "2",
            "--experts",
            "16",
            "--experts-used",
            "4",
            "--quant",
            "Q8_0",
            "--routing-skew",
            "0.5",
            "--split",
            "2",
            "--seed",
            "7",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]
    printed = capsys.readouterr().out
    assert all(name in printed for name in names) and "MB" in printed
    reader = gguf.GGUFReader(tmp_path / names[0])
    assert _field(reader, "qwen3moe.expert_count") == 16
    assert _field(reader, "qwen3moe.expert_used_count") == 4
    assert _field(reader, "moedesk.synthetic.seed") == 7
    assert _field(reader, "moedesk.synthetic.routing") == "uniform"


def test_command_rejects_a_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synthetic.main([str(tmp_path / "m.gguf"), "--experts-used", "99"]) == 2
    assert "n_expert_used" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_module_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.synthetic", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--routing-skew" in result.stdout
    assert "--routing {uniform,realistic}" in result.stdout
