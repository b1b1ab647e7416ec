"""The shape of a synthetic MoE model: its spec, the presets, and the tensors llama.cpp expects.

See app/engine/synthetic.py for the writer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import gguf

Q = gguf.GGMLQuantizationType  # short: the tensor plan names many types
Shape = tuple[int, ...]  # ggml order: row length (ne0) first
QUANT_TYPES = {"Q4_0": Q.Q4_0, "Q8_0": Q.Q8_0, "F16": Q.F16}
# The first _CHANNEL_DIMS dims of the hidden state are the routing channel (see _router); with
# realistic routing the next SIGNATURE_DIMS hold each token's position code (synthetic_routing).
_CHANNEL_DIMS = 32
SIGNATURE_DIMS = 128
# "uniform": routers blind to the token (routing_skew may add a hot set); "realistic": skewed
# and local from token to token like Qwen3's routers (see app/engine/synthetic_routing.py)
ROUTING_MODES = ("uniform", "realistic")


@dataclass(frozen=True)
class SyntheticSpec:
    """The shape and contents of a synthetic MoE model."""

    name: str = "tiny"
    arch: str = "qwen3moe"  # or "llama" (Mixtral-style MoE)
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
    routing_skew: float = 0.0  # 0: roughly uniform routing; 1: hot experts take most tokens
    routing: str = "uniform"  # or "realistic" (see ROUTING_MODES)
    split: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.arch not in ("qwen3moe", "llama"):
            problems.append(f"arch {self.arch!r} is not qwen3moe or llama")
        if self.quant not in QUANT_TYPES:
            problems.append(f"quant {self.quant!r} is not one of {', '.join(QUANT_TYPES)}")
        if not 1 <= self.n_expert_used <= self.n_expert <= 512:
            problems.append("need 1 <= n_expert_used <= n_expert <= 512")
        if self.n_layer < 1 or self.n_head % max(self.n_head_kv, 1):
            problems.append("need n_layer >= 1 and n_head a multiple of n_head_kv")
        rows = (self.n_embd, self.n_ff_exp, self.n_head * self.head_dim)
        if any(n % 32 for n in rows) or self.n_embd <= _CHANNEL_DIMS:
            problems.append("n_embd, n_ff_exp and n_head*head_dim must be multiples of 32")
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
}


@dataclass(frozen=True)
class TensorPlan:
    """One tensor as llama.cpp expects it: ``shape`` is in ggml order (row length first)."""

    name: str
    shape: Shape
    qtype: gguf.GGMLQuantizationType
    # "reader" / "writer": random matrix of RMS ``rms`` that reads the normed hidden state /
    # writes into the residual stream; "head": the output reader; "embd", "norm", "router"
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


def _layer_plan(spec: SyntheticSpec, i: int, branch: float) -> list[TensorPlan]:
    qt, e, ff, n_expert = QUANT_TYPES[spec.quant], spec.n_embd, spec.n_ff_exp, spec.n_expert
    q, kv = spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim

    def matrix(name: str, shape: Shape, kind: str = "reader", gain: float = 1.0) -> TensorPlan:
        return TensorPlan(f"blk.{i}.{name}.weight", shape, qt, kind, gain / math.sqrt(shape[0]))

    def norm(name: str, n: int) -> TensorPlan:
        return TensorPlan(f"blk.{i}.{name}.weight", (n,), Q.F32, "norm")

    qk_norms = [norm("attn_q_norm", spec.head_dim), norm("attn_k_norm", spec.head_dim)]
    return [
        norm("attn_norm", e),
        matrix("attn_q", (e, q)),
        matrix("attn_k", (e, kv)),
        matrix("attn_v", (e, kv)),
        matrix("attn_output", (q, e), "writer", branch),
        *(qk_norms if spec.arch == "qwen3moe" else []),
        norm("ffn_norm", e),
        TensorPlan(f"blk.{i}.ffn_gate_inp.weight", (e, n_expert), Q.F32, "router", layer=i),
        matrix("ffn_gate_exps", (e, ff, n_expert)),
        matrix("ffn_up_exps", (e, ff, n_expert)),
        # SiLU(gate)*up has an RMS near 0.6: 1.5 brings the expert output back near ``branch``
        matrix("ffn_down_exps", (ff, e, n_expert), "writer", 1.5 * branch),
    ]


def tensor_plan(spec: SyntheticSpec) -> list[TensorPlan]:
    """Every tensor of the model, in file order, with the names and shapes llama.cpp loads."""
    e = spec.n_embd
    # Residual branches are scaled down so that activations stay bounded over 94 layers.
    branch = 1.0 / math.sqrt(2 * spec.n_layer)
    # token_embd is read by row lookup on the CPU (llama.cpp never offloads the input layer),
    # so its type changes neither speed nor GPU memory; F16 keeps it simple to shape.
    plan = [TensorPlan("token_embd.weight", (e, spec.n_vocab), Q.F16, "embd")]
    qt = QUANT_TYPES[spec.quant]
    for i in range(spec.n_layer):
        plan += _layer_plan(spec, i, branch)
    plan.append(TensorPlan("output_norm.weight", (e,), Q.F32, "norm"))
    # logits with a spread of ~3 give peaked, sane next-token distributions
    head_rms = 3 / math.sqrt(e)
    plan.append(TensorPlan("output.weight", (e, spec.n_vocab), qt, "head", head_rms))
    return plan


def estimate_size_bytes(spec: SyntheticSpec) -> int:
    """Bytes of tensor data the model holds (the files add alignment and a few MB of metadata)."""
    return sum(t.nbytes for t in tensor_plan(spec))
