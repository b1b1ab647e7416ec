"""The shape of a synthetic MoE model: its spec, the presets, and the tensors llama.cpp expects.

See app/synthetic/writer.py for the writer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import gguf

Q = gguf.GGMLQuantizationType  # short: the tensor plan names many types
Shape = tuple[int, ...]  # ggml order: row length (ne0) first
QUANT_TYPES = {"Q4_0": Q.Q4_0, "Q8_0": Q.Q8_0, "F16": Q.F16}
# gpt-oss ships its routed experts in MXFP4 (32 FP4 values with one power-of-two scale); the
# k-quants and i-quants of llama.cpp's Q2_K..Q6_K and unsloth's dynamic quants (256-value
# super-blocks) for timing the CPU's kernels on them (random blocks: no quantization)
EXPERT_QUANT_TYPES = {**QUANT_TYPES, "MXFP4": Q.MXFP4,
                      **{name: Q[name] for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ1_S", "IQ1_M",
                                                    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S",
                                                    "IQ4_XS")}}
ARCHITECTURES = ("qwen3moe", "llama", "deepseek2", "glm4moe", "gpt-oss")
# tokenizer and chat template families (app/synthetic/tokenizer.py)
TOKENIZERS = ("qwen3", "deepseek-v3", "kimi-k2", "glm4", "gpt-oss")
# The first _CHANNEL_DIMS dims of the hidden state are the routing channel (see _router); with
# realistic routing the next SIGNATURE_DIMS hold each token's position code (synthetic_routing).
_CHANNEL_DIMS = 32
SIGNATURE_DIMS = 128
# "uniform": routers blind to the token (routing_skew may add a hot set); "realistic": skewed
# and local from token to token like Qwen3's routers (see app/synthetic/routing.py)
ROUTING_MODES = ("uniform", "realistic")


@dataclass(frozen=True)
class SyntheticSpec:
    """The shape and contents of a synthetic MoE model."""

    name: str = "tiny"
    arch: str = "qwen3moe"  # see ARCHITECTURES: "llama" is Mixtral-style MoE
    tokenizer: str = "qwen3"  # see TOKENIZERS: special tokens and chat template
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 8
    n_head_kv: int = 2
    head_dim: int = 32
    n_expert: int = 8
    n_expert_used: int = 2
    n_ff_exp: int = 64
    n_vocab: int = 512
    n_ctx_train: int = 4096
    rope_freq_base: float = 1_000_000.0
    rms_eps: float = 1e-6
    quant: str = "Q4_0"
    expert_quant: str = ""  # the routed experts' type when not ``quant`` (gpt-oss: MXFP4)
    # DeepSeek-V3 / Kimi-K2 / GLM-4.5: leading dense layers (FFN width n_ff), shared experts
    n_dense_lead: int = 0
    n_ff: int = 0
    n_expert_shared: int = 0
    # multi-head latent attention (deepseek2): q and kv LoRA ranks; head_dim is the decompressed
    # key's (no-RoPE + RoPE part), v_head_dim the value's; rope_dim is the RoPE'd part of a key
    # (also GLM's partial RoPE)
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    v_head_dim: int = 0
    rope_dim: int = 0
    expert_gating: str = "softmax"  # or "sigmoid" with a selection bias (DeepSeek-V3, GLM-4.5)
    # DeepSeek-V3's group-limited routing: experts in n_expert_groups groups, a token's experts
    # from the n_group_used groups with the best two scores (0: no groups)
    n_expert_groups: int = 0
    n_group_used: int = 0
    expert_weights_scale: float = 0.0
    n_nextn: int = 0  # GLM-4.5's multi-token-prediction block after the layers (llama.cpp skips it)
    qk_norm: bool = True  # qwen3moe and GLM-4.5 (not Air) normalize q and k per head
    sliding_window: int = 0  # gpt-oss: every other layer attends to the last 128 tokens
    routing_skew: float = 0.0  # 0: roughly uniform routing; 1: hot experts take most tokens
    routing: str = "uniform"  # or "realistic" (see ROUTING_MODES)
    split: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.arch not in ARCHITECTURES:
            problems.append(f"arch {self.arch!r} is not one of {', '.join(ARCHITECTURES)}")
        if self.tokenizer not in TOKENIZERS:
            problems.append(f"tokenizer {self.tokenizer!r} is not one of {', '.join(TOKENIZERS)}")
        if self.quant not in QUANT_TYPES:
            problems.append(f"quant {self.quant!r} is not one of {', '.join(QUANT_TYPES)}")
        if self.expert_quant and self.expert_quant not in EXPERT_QUANT_TYPES:
            problems.append(f"expert_quant {self.expert_quant!r} is not one of "
                            f"{', '.join(EXPERT_QUANT_TYPES)}")
        elif self.expert_quant:
            block = gguf.GGML_QUANT_SIZES[EXPERT_QUANT_TYPES[self.expert_quant]][0]
            if self.n_embd % block or self.n_ff_exp % block:
                problems.append(f"expert_quant {self.expert_quant} needs n_embd and n_ff_exp "
                                f"multiples of {block}")
        if self.arch == "deepseek2" and not (self.kv_lora_rank and self.rope_dim and self.v_head_dim
                                             and self.head_dim > self.rope_dim):
            problems.append("deepseek2 needs kv_lora_rank, v_head_dim and rope_dim < head_dim")
        if self.n_expert_groups and (self.n_expert % self.n_expert_groups
                                     or self.n_expert // self.n_expert_groups < 2
                                     or not 1 <= self.n_group_used <= self.n_expert_groups
                                     or self.n_expert_used > self.n_group_used * self.n_expert
                                     // self.n_expert_groups):
            problems.append("n_expert_groups must divide n_expert in groups of 2+, and "
                            "1 <= n_group_used <= n_expert_groups, their experts at least top-k")
        if not 0 <= self.n_dense_lead < self.n_layer or (self.n_dense_lead and self.n_ff % 32 != 0):
            problems.append("need 0 <= n_dense_lead < n_layer, and n_ff a multiple of 32 with them")
        if not 1 <= self.n_expert_used <= self.n_expert <= 512:
            problems.append("need 1 <= n_expert_used <= n_expert <= 512")
        if self.n_layer < 1 or self.n_head % max(self.n_head_kv, 1):
            problems.append("need n_layer >= 1 and n_head a multiple of n_head_kv")
        rows = (self.n_embd, self.n_ff_exp, self.n_head * self.head_dim, self.q_lora_rank,
                self.kv_lora_rank, self.head_dim - self.rope_dim if self.kv_lora_rank else 0)
        if any(n % 32 for n in rows) or self.n_embd <= _CHANNEL_DIMS:
            problems.append("n_embd, n_ff_exp, n_head*head_dim, the LoRA ranks and the no-RoPE key "
                            "part must be multiples of 32")
        if self.routing not in ROUTING_MODES:
            problems.append(f"routing {self.routing!r} is not one of {', '.join(ROUTING_MODES)}")
        elif self.routing == "realistic" and self.n_embd < self.closed_dims + 96:
            # the router's per-token term and the head's random logits need ordinary dims
            problems.append(f"realistic routing needs n_embd >= {self.closed_dims + 96}")
        if self.routing_skew < 0 or self.seed < 0 or not 1 <= self.split <= 2 * self.n_layer:
            problems.append("need routing_skew >= 0, seed >= 0 and 1 <= split <= 2*n_layer")
        if problems:
            raise ValueError(f"invalid synthetic spec {self.name!r}: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides: object) -> SyntheticSpec:
        """A named preset (see PRESETS) with some fields replaced, e.g. ``n_layer=2``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)  # type: ignore[arg-type]

    @property
    def closed_dims(self) -> int:
        """Leading hidden-state dims no attention or expert matrix reads or writes."""
        return _CHANNEL_DIMS + (SIGNATURE_DIMS if self.routing == "realistic" else 0)

    @property
    def n_layer_all(self) -> int:
        """Blocks in the file: the layers and the multi-token-prediction block(s)."""
        return self.n_layer + self.n_nextn

    @property
    def expert_qtype(self) -> gguf.GGMLQuantizationType:
        return EXPERT_QUANT_TYPES[self.expert_quant or self.quant]

    @property
    def n_hot(self) -> int:
        """How many experts per layer routing_skew favours."""
        return min(self.n_expert, max(2, self.n_expert_used // 2))


_QWEN3_30B = SyntheticSpec(
    name="qwen3-30b-a3b", n_layer=48, n_embd=2048, n_head=32, n_head_kv=4, head_dim=128,
    n_expert=128, n_expert_used=8, n_ff_exp=768, n_vocab=151936, n_ctx_train=40960,
)  # fmt: skip
_MIXTRAL_8X7B = SyntheticSpec(
    name="mixtral-8x7b", arch="llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8,
    head_dim=128, n_expert=8, n_expert_used=2, n_ff_exp=14336, n_vocab=32000, n_ctx_train=32768,
    rms_eps=1e-5,
)  # fmt: skip
# DeepSeek-V3 / R1 (671B): MLA, 3 dense layers, 256 routed experts (top-8, sigmoid gating with a
# selection bias) + 1 shared; its GGUFs leave out the multi-token-prediction layer
_DEEPSEEK_V3 = SyntheticSpec(
    name="deepseek-v3", arch="deepseek2", tokenizer="deepseek-v3", n_layer=61, n_embd=7168,
    n_head=128, n_head_kv=1, head_dim=192, v_head_dim=128, rope_dim=64, q_lora_rank=1536,
    kv_lora_rank=512, n_expert=256, n_expert_used=8, n_ff_exp=2048, n_expert_shared=1,
    n_dense_lead=3, n_ff=18432, n_vocab=129280, n_ctx_train=163840, rope_freq_base=10000.0,
    expert_gating="sigmoid", expert_weights_scale=2.5, n_expert_groups=8, n_group_used=4,
)  # fmt: skip
# Kimi-K2 (1T): DeepSeek-V3's architecture with 384 experts, 64 heads, one dense layer
_KIMI_K2 = dataclasses.replace(
    _DEEPSEEK_V3, name="kimi-k2", tokenizer="kimi-k2", n_head=64, n_expert=384, n_dense_lead=1,
    n_vocab=163840, n_ctx_train=131072, rope_freq_base=50000.0, expert_weights_scale=2.827,
    n_expert_groups=1, n_group_used=1,
)
# GLM-4.5 (355B-A32B): GQA with q/k/v biases and half-RoPE heads, 3 dense layers, 160 experts
# (top-8, sigmoid) + 1 shared, and a multi-token-prediction block at the end of the file
_GLM_45 = SyntheticSpec(
    name="glm-4.5", arch="glm4moe", tokenizer="glm4", n_layer=92, n_nextn=1, n_embd=5120,
    n_head=96, n_head_kv=8, head_dim=128, rope_dim=64, n_expert=160, n_expert_used=8,
    n_ff_exp=1536, n_expert_shared=1, n_dense_lead=3, n_ff=12288, n_vocab=151552,
    n_ctx_train=131072, rope_freq_base=1_000_000.0, rms_eps=1e-5, expert_gating="sigmoid",
    expert_weights_scale=2.5,
)  # fmt: skip
_GLM_45_AIR = dataclasses.replace(  # GLM-4.5-Air (106B-A12B)
    _GLM_45, name="glm-4.5-air", n_layer=46, n_embd=4096, n_expert=128, n_ff_exp=1408,
    n_dense_lead=1, n_ff=10944, expert_weights_scale=1.0, qk_norm=False,
)
# gpt-oss-120b: MXFP4 experts (128, top-4) with biases, attention sinks, sliding-window
# attention (128 tokens) on every other layer
_GPT_OSS_120B = SyntheticSpec(
    name="gpt-oss-120b", arch="gpt-oss", tokenizer="gpt-oss", n_layer=36, n_embd=2880, n_head=64,
    n_head_kv=8, head_dim=64, n_expert=128, n_expert_used=4, n_ff_exp=2880, n_vocab=201088,
    n_ctx_train=131072, rope_freq_base=150000.0, rms_eps=1e-5, quant="Q8_0", expert_quant="MXFP4",
    sliding_window=128,
)  # fmt: skip
PRESETS: dict[str, SyntheticSpec] = {
    "tiny": SyntheticSpec(),
    "tiny-mixtral": SyntheticSpec(name="tiny-mixtral", arch="llama", rope_freq_base=10000.0),
    # Qwen3's routing shape (128 experts, top-8) and realistic routing at small widths
    "tiny-realistic": SyntheticSpec(
        name="tiny-realistic", n_embd=256, n_head=4, head_dim=64, n_expert=128, n_expert_used=8,
        n_ff_exp=32, routing="realistic",
    ),
    "qwen3-30b-a3b": _QWEN3_30B,
    "qwen3-235b-a22b": dataclasses.replace(
        _QWEN3_30B, name="qwen3-235b-a22b", n_layer=94, n_embd=4096, n_head=64, n_ff_exp=1536
    ),
    "mixtral-8x7b": _MIXTRAL_8X7B,
    # the giant families: real shapes and metadata (see README.md's model list)
    "deepseek-v3": _DEEPSEEK_V3,
    "kimi-k2": _KIMI_K2,
    "glm-4.5": _GLM_45,
    "glm-4.5-air": _GLM_45_AIR,
    "gpt-oss-120b": _GPT_OSS_120B,
    "gpt-oss-20b": dataclasses.replace(_GPT_OSS_120B, name="gpt-oss-20b", n_layer=24, n_expert=32),
    # each family's structure at test size: every tensor kind, a few layers, small widths
    "tiny-deepseek-v3": dataclasses.replace(
        _DEEPSEEK_V3, name="tiny-deepseek-v3", n_layer=4, n_dense_lead=1, n_embd=128, n_head=4,
        head_dim=48, v_head_dim=32, rope_dim=16, q_lora_rank=64, kv_lora_rank=64, n_expert=16,
        n_expert_used=4, n_ff_exp=64, n_ff=128, n_vocab=512, n_ctx_train=4096,
    ),
    "tiny-kimi-k2": dataclasses.replace(
        _KIMI_K2, name="tiny-kimi-k2", n_layer=4, n_dense_lead=1, n_embd=128, n_head=4, head_dim=48,
        v_head_dim=32, rope_dim=16, q_lora_rank=64, kv_lora_rank=64, n_expert=24, n_expert_used=4,
        n_ff_exp=64, n_ff=128, n_vocab=512, n_ctx_train=4096,
    ),
    "tiny-glm-4.5": dataclasses.replace(
        _GLM_45, name="tiny-glm-4.5", n_layer=4, n_dense_lead=1, n_embd=128, n_head=4, n_head_kv=2,
        head_dim=32, rope_dim=16, n_expert=16, n_expert_used=4, n_ff_exp=64, n_ff=128, n_vocab=512,
        n_ctx_train=4096,
    ),
    "tiny-gpt-oss": dataclasses.replace(
        _GPT_OSS_120B, name="tiny-gpt-oss", n_layer=4, n_embd=128, n_head=4, n_head_kv=2,
        head_dim=32, n_expert=16, n_expert_used=4, n_ff_exp=64, n_vocab=512, n_ctx_train=4096,
        sliding_window=32,
    ),
}


@dataclass(frozen=True)
class TensorPlan:
    """One tensor as llama.cpp expects it: ``shape`` is in ggml order (row length first)."""

    name: str
    shape: Shape
    qtype: gguf.GGMLQuantizationType
    # "reader" / "writer": random matrix of RMS ``rms`` that reads the normed hidden state /
    # writes into the residual stream; "inner": one that reads neither (MLA's latent
    # projections); "head": the output reader; "embd", "norm", "router"; "zeros": F32 zeros
    # (biases, attention sinks)
    kind: str
    rms: float = 0.0
    layer: int = -1

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def row_bytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.shape[0] // block * size

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.row_bytes


Shard = list[tuple[int, TensorPlan]]  # (index in the plan, tensor), in file order
Job = tuple[int, int, TensorPlan, int, int]  # file offset, tensor index, tensor, row, rows


class _LayerTensors:
    """Builds one block's TensorPlans: ``matrix`` for weights, ``f32`` for norms, biases, sinks."""

    def __init__(self, spec: SyntheticSpec, layer: int) -> None:
        self.spec, self.layer, self.qtype = spec, layer, QUANT_TYPES[spec.quant]

    def matrix(self, name: str, shape: Shape, kind: str = "reader", gain: float = 1.0,
               qtype: gguf.GGMLQuantizationType | None = None) -> TensorPlan:
        return TensorPlan(f"blk.{self.layer}.{name}.weight", shape, qtype or self.qtype, kind,
                          gain / math.sqrt(shape[0]))

    def f32(self, name: str, shape: Shape, kind: str = "norm", suffix: str = "weight") -> TensorPlan:
        return TensorPlan(f"blk.{self.layer}.{name}.{suffix}", shape, Q.F32, kind, layer=self.layer)


def _attention(spec: SyntheticSpec, b: _LayerTensors, branch: float) -> list[TensorPlan]:
    """The attention's tensors after attn_norm, with the norm that precedes the FFN."""
    e = spec.n_embd
    if spec.arch == "deepseek2":  # multi-head latent attention, as llama.cpp's converter splits it
        nope = spec.head_dim - spec.rope_dim
        q = ([b.f32("attn_q_a_norm", (spec.q_lora_rank,)), b.matrix("attn_q_a", (e, spec.q_lora_rank)),
              b.matrix("attn_q_b", (spec.q_lora_rank, spec.n_head * spec.head_dim), "inner")]
             if spec.q_lora_rank else [b.matrix("attn_q", (e, spec.n_head * spec.head_dim))])
        return [
            *q,
            b.f32("attn_kv_a_norm", (spec.kv_lora_rank,)),
            b.matrix("attn_kv_a_mqa", (e, spec.kv_lora_rank + spec.rope_dim)),
            b.matrix("attn_k_b", (nope, spec.kv_lora_rank, spec.n_head), "inner"),
            b.matrix("attn_v_b", (spec.kv_lora_rank, spec.v_head_dim, spec.n_head), "inner"),
            b.matrix("attn_output", (spec.n_head * spec.v_head_dim, e), "writer", branch),
            b.f32("ffn_norm", (e,)),
        ]
    q, kv = spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim
    qkv = [b.matrix("attn_q", (e, q)), b.matrix("attn_k", (e, kv)), b.matrix("attn_v", (e, kv))]
    output = b.matrix("attn_output", (q, e), "writer", branch)
    qk_norms = [b.f32("attn_q_norm", (spec.head_dim,)), b.f32("attn_k_norm", (spec.head_dim,))]
    if spec.arch in ("qwen3moe", "llama"):
        return [*qkv, output, *(qk_norms if spec.arch == "qwen3moe" else []), b.f32("ffn_norm", (e,))]
    biases = [b.f32(f"attn_{x}", (n,), "zeros", "bias") for x, n in (("q", q), ("k", kv), ("v", kv))]
    if spec.arch == "glm4moe":
        return [*qkv, *biases, output, *(qk_norms if spec.qk_norm else []),
                b.f32("post_attention_norm", (e,))]
    # gpt-oss: biases everywhere and one learned "sink" logit per head
    return [*qkv, *biases, output, b.f32("attn_output", (e,), "zeros", "bias"),
            b.f32("attn_sinks", (spec.n_head,), "zeros"), b.f32("post_attention_norm", (e,))]


def _ffn(spec: SyntheticSpec, b: _LayerTensors, branch: float) -> list[TensorPlan]:
    e, ff, n_expert, xt = spec.n_embd, spec.n_ff_exp, spec.n_expert, spec.expert_qtype
    if b.layer < spec.n_dense_lead:
        return [b.matrix("ffn_gate", (e, spec.n_ff)), b.matrix("ffn_up", (e, spec.n_ff)),
                b.matrix("ffn_down", (spec.n_ff, e), "writer", 1.5 * branch)]
    router = [TensorPlan(f"blk.{b.layer}.ffn_gate_inp.weight", (e, n_expert), Q.F32, "router",
                         layer=b.layer)]
    if spec.arch == "gpt-oss":
        router.append(b.f32("ffn_gate_inp", (n_expert,), "zeros", "bias"))
    elif spec.expert_gating == "sigmoid":  # DeepSeek-V3's selection bias (balances the load)
        router.append(b.f32("exp_probs_b", (n_expert,), "zeros", "bias"))
    experts = [
        b.matrix("ffn_gate_exps", (e, ff, n_expert), qtype=xt),
        b.matrix("ffn_up_exps", (e, ff, n_expert), qtype=xt),
        # SiLU(gate)*up has an RMS near 0.6: 1.5 brings the expert output back near ``branch``
        b.matrix("ffn_down_exps", (ff, e, n_expert), "writer", 1.5 * branch, qtype=xt),
    ]
    if spec.arch == "gpt-oss":
        experts += [b.f32(f"ffn_{x}_exps", (n, n_expert), "zeros", "bias")
                    for x, n in (("gate", ff), ("up", ff), ("down", e))]
    shared = ff * spec.n_expert_shared
    shexp = [b.matrix("ffn_gate_shexp", (e, shared)), b.matrix("ffn_up_shexp", (e, shared)),
             b.matrix("ffn_down_shexp", (shared, e), "writer", 1.5 * branch)] if shared else []
    return [*router, *experts, *shexp]


def _layer_plan(spec: SyntheticSpec, i: int, branch: float) -> list[TensorPlan]:
    b = _LayerTensors(spec, i)
    plan = [b.f32("attn_norm", (spec.n_embd,)), *_attention(spec, b, branch), *_ffn(spec, b, branch)]
    if i >= spec.n_layer:  # GLM-4.5's multi-token-prediction block: llama.cpp skips it on load
        e = spec.n_embd
        plan += [b.f32("nextn.enorm", (e,)), b.f32("nextn.hnorm", (e,)),
                 TensorPlan(f"blk.{i}.nextn.eh_proj.weight", (2 * e, e), b.qtype, "inner",
                            1 / math.sqrt(2 * e)),
                 b.f32("nextn.shared_head_norm", (e,))]
    return plan


def tensor_plan(spec: SyntheticSpec) -> list[TensorPlan]:
    """Every tensor of the model, in file order, with the names and shapes llama.cpp loads."""
    e = spec.n_embd
    # Residual branches are scaled down so that activations stay bounded over 94 layers.
    branch = 1.0 / math.sqrt(2 * spec.n_layer)
    # token_embd is read by row lookup on the CPU (llama.cpp never offloads the input layer),
    # so its type changes neither speed nor GPU memory; F16 keeps it simple to shape.
    plan = [TensorPlan("token_embd.weight", (e, spec.n_vocab), Q.F16, "embd")]
    qt = QUANT_TYPES[spec.quant]
    for i in range(spec.n_layer_all):
        plan += _layer_plan(spec, i, branch)
    plan.append(TensorPlan("output_norm.weight", (e,), Q.F32, "norm"))
    # logits with a spread of ~3 give peaked, sane next-token distributions
    head_rms = 3 / math.sqrt(e)
    plan.append(TensorPlan("output.weight", (e, spec.n_vocab), qt, "head", head_rms))
    return plan


def estimate_size_bytes(spec: SyntheticSpec) -> int:
    """Bytes of tensor data the model holds (the files add alignment and a few MB of metadata)."""
    return sum(t.nbytes for t in tensor_plan(spec))
