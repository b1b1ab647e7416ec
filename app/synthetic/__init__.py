"""Synthetic Mixture-of-Experts GGUF models that llama.cpp loads and runs: every family's real
shapes, metadata, tokenizer and chat template with random weights (spec.py: the shapes and
presets; writer.py: the files; tokenizer.py, weights.py, routing.py: their contents).

Usage: ``python -m app.synthetic OUT.gguf --preset qwen3-30b-a3b``. Tests, benchmarks and the
demos use it; the engine never does.
"""

from app.synthetic.spec import (
    PRESETS,
    QUANT_TYPES,
    SyntheticSpec,
    TensorPlan,
    estimate_size_bytes,
    tensor_plan,
)
from app.synthetic.weights import hot_experts
from app.synthetic.writer import (
    main,
    shard_paths,
    write_sparse_tensors,
    write_synthetic_header,
    write_synthetic_model,
)

__all__ = ["PRESETS", "QUANT_TYPES", "SyntheticSpec", "TensorPlan", "estimate_size_bytes",
           "hot_experts", "main", "shard_paths", "tensor_plan", "write_sparse_tensors",
           "write_synthetic_header", "write_synthetic_model"]
