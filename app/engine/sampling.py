"""A chat's sampler chain: the request's settings over the model's own defaults, and grammars.

A ``Sampling`` field left None takes the model's default, from its GGUF's
``general.sampling.*`` keys (what the model's makers recommend, written by
convert_hf_to_gguf.py from generation_config.json), else MoE Desk's ``FALLBACK``. The chain
follows llama.cpp's own order (common/sampling.cpp): grammar, penalties, top-k, typical, top-p,
min-p, temperature, then the draw.
"""

from __future__ import annotations

import ctypes
import json
import random
from dataclasses import dataclass, fields, replace

import llama_cpp

from app.engine.protocol import Sampling
from app.errors import GrammarError

# MoE Desk's defaults where neither the request nor the model says
FALLBACK = Sampling(temperature=0.7, top_p=0.95, top_k=40, min_p=0.05, typical_p=1.0,
                    repeat_penalty=1.0, repeat_last_n=64)
# Sampling field -> the GGUF key that gives the model's default, and its type
MODEL_KEYS = {
    "temperature": ("general.sampling.temp", float),
    "top_p": ("general.sampling.top_p", float),
    "top_k": ("general.sampling.top_k", int),
    "min_p": ("general.sampling.min_p", float),
    "repeat_penalty": ("general.sampling.penalty_repeat", float),
    "repeat_last_n": ("general.sampling.penalty_last_n", int),
}
# JSON-schema keywords llama-cpp-python's converter does not enforce: a schema with them is
# refused, since output that ignores them would not match it
UNENFORCED_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                       "multipleOf", "uniqueItems", "minProperties", "maxProperties")
JSON_CHAR_RULE = ('char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] '
                  '[0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])')
GRAMMAR_HINT = ("Check the grammar (llama.cpp's GBNF, with a rule named root) or the JSON "
                "schema; schemas with external $refs are not supported.")


@dataclass(frozen=True)
class ModelSampling:
    """A model's own sampling defaults: the general.sampling.* keys its GGUF has."""

    values: dict[str, float | int]

    @classmethod
    def read(cls, model: int) -> ModelSampling:
        values: dict[str, float | int] = {}
        buf = ctypes.create_string_buffer(128)
        for name, (key, kind) in MODEL_KEYS.items():
            n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
            if n < 0:
                continue
            try:
                values[name] = kind(float(buf.value.decode()))
            except ValueError:  # a damaged key: the fallback serves
                continue
        return cls(values)

    def resolve(self, sampling: Sampling) -> Sampling:
        """``sampling`` with every None filled: the model's default, else MoE Desk's."""
        filled = {}
        for f in fields(Sampling):
            if getattr(sampling, f.name) is None and getattr(FALLBACK, f.name) is not None:
                filled[f.name] = self.values.get(f.name, getattr(FALLBACK, f.name))
        return replace(sampling, **filled)


def grammar_text(sampling: Sampling) -> str | None:
    """The GBNF grammar a chat's output must follow, if any (a JSON schema converted)."""
    if sampling.grammar is not None and sampling.json_schema is not None:
        raise GrammarError("a chat takes a grammar or a JSON schema, not both.", GRAMMAR_HINT)
    if sampling.json_schema is None:
        return sampling.grammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        unenforced = _unenforced(json.loads(sampling.json_schema))
        if unenforced:
            raise GrammarError(
                f"the JSON schema uses {unenforced!r}, which MoE Desk cannot enforce while "
                "sampling, so the answer might not match it.",
                f"Leave {unenforced!r} out of the schema and check it on the answer instead.")
        grammar = json_schema_to_gbnf(sampling.json_schema)
    except RecursionError:
        raise GrammarError("the JSON schema nests too deeply to turn into a grammar.",
                           GRAMMAR_HINT) from None
    except (ValueError, TypeError, KeyError, AttributeError, AssertionError,
            NotImplementedError, json.JSONDecodeError) as exc:
        # the converter reports a schema it cannot follow with whatever it trips on
        raise GrammarError(f"the JSON schema cannot be turned into a grammar: {exc!r}",
                           GRAMMAR_HINT) from None
    # the converter's string characters let control characters through, which JSON forbids
    # raw (llama.cpp's own converter excludes them, as here)
    return "\n".join(JSON_CHAR_RULE if line.startswith("char ::= ") else line
                     for line in grammar.split("\n"))


def _unenforced(schema: object) -> str | None:
    """The first keyword of UNENFORCED_KEYWORDS used anywhere in a schema (property names,
    which may be anything, excepted)."""
    if isinstance(schema, list):
        return next((k for item in schema if (k := _unenforced(item))), None)
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key in UNENFORCED_KEYWORDS:
            return key
        children = value.values() if key in ("properties", "$defs", "definitions") \
            and isinstance(value, dict) else [value]
        found = next((k for child in children if (k := _unenforced(child))), None)
        if found:
            return found
    return None


def new_sampler(sampling: Sampling, vocab: int, n_ctx: int) -> int:
    """A llama.cpp sampler chain for resolved ``sampling`` (no None left but seed and
    max_tokens); free it with ``llama_sampler_free``. A GrammarError if its grammar does not
    parse. A null seed draws a fresh random one."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    try:
        grammar = grammar_text(sampling)
        if grammar is not None:
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not sampler:  # llama.cpp logs why; the message says what to look at
                raise GrammarError("llama.cpp could not parse the grammar.", GRAMMAR_HINT)
            add(chain, sampler)
    except BaseException:
        llama_cpp.llama_sampler_free(chain)
        raise
    penalties = (sampling.repeat_penalty != 1.0 or sampling.frequency_penalty != 0.0
                 or sampling.presence_penalty != 0.0)
    if penalties:
        last_n = sampling.repeat_last_n
        add(chain, llama_cpp.llama_sampler_init_penalties(
            llama_cpp.llama_vocab_n_tokens(vocab),
            n_ctx if last_n is None or last_n < 0 else last_n, sampling.repeat_penalty,
            sampling.frequency_penalty, sampling.presence_penalty))
    if sampling.temperature is not None and sampling.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
    if sampling.top_k:
        add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if sampling.typical_p is not None and sampling.typical_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_typical(sampling.typical_p, 1))
    add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain
