"""The sampling fields of an OpenAI (or llama-server) request, as the engine's ``Sampling``.

Every field that changes how tokens are picked is honoured or refused with a 400 that names
it, never dropped: a client that asks for mirostat and gets plain sampling would be misled.
Fields left out take the model's own defaults (the engine fills them from the GGUF).
"""

from __future__ import annotations

import json
import math
from typing import Any

from app.engine.protocol import Sampling
from app.serve.errors import bad

# llama-server's sampling fields that MoE Desk's engine does not implement, with the values
# that leave sampling unchanged (accepted, since clients send the defaults)
UNSUPPORTED_SAMPLING: dict[str, tuple[Any, ...]] = {
    "mirostat": (None, 0), "tfs_z": (None, 1, 1.0), "dynatemp_range": (None, 0, 0.0),
    "xtc_probability": (None, 0, 0.0), "dry_multiplier": (None, 0, 0.0),
    "top_n_sigma": (None, -1, -1.0), "logit_bias": (None, {}, []), "samplers": (None,),
    "n_probs": (None, 0), "logprobs": (None, False), "top_logprobs": (None, 0),
    "penalize_nl": (None, False),
}


def number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or isinstance(value, float) and not math.isfinite(value):
        raise bad(f"'{name}' must be a number.", name)
    if not low <= value <= high:
        raise bad(f"'{name}' must be between {low:g} and {high:g}; got {value}.", name)
    return float(value)


def integer(body: dict[str, Any], name: str, low: int, high: int = 2**31 - 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{name}' must be an integer.", name)
    if not low <= value <= high:
        raise bad(f"'{name}' must be between {low} and {high}; got {value}.", name)
    return value


def sampling(body: dict[str, Any]) -> Sampling:
    """The request's Sampling (ApiError naming the field if one is wrong or unsupported)."""
    for name, neutral in UNSUPPORTED_SAMPLING.items():
        if not any(_same(body.get(name), n) for n in neutral):
            raise bad(f"'{name}' is not supported by MoE Desk's server (it would change how "
                      "tokens are picked, and the engine cannot do that); leave it out.", name)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("'seed' must be an integer.", "seed")
    ignore_eos = body.get("ignore_eos", False)  # llama.cpp server's extension (benchmarks)
    if not isinstance(ignore_eos, bool):
        raise bad("'ignore_eos' must be true or false.", "ignore_eos")
    # OpenAI's two names, and llama-server's n_predict (-1: no limit)
    max_tokens = (integer(body, "max_completion_tokens", 1) or integer(body, "max_tokens", 1)
                  or integer(body, "n_predict", -1))
    grammar, schema = constraint(body)
    return Sampling(
        temperature=number(body, "temperature", 0.0, 2.0),
        top_p=number(body, "top_p", 0.0, 1.0),
        top_k=integer(body, "top_k", 0),
        min_p=number(body, "min_p", 0.0, 1.0),
        typical_p=number(body, "typical_p", 0.0, 1.0),
        repeat_penalty=number(body, "repeat_penalty", 0.0, 10.0),
        repeat_last_n=integer(body, "repeat_last_n", -1),
        frequency_penalty=number(body, "frequency_penalty", -2.0, 2.0) or 0.0,
        presence_penalty=number(body, "presence_penalty", -2.0, 2.0) or 0.0,
        seed=None if seed is None else seed % 2**32,  # llama.cpp takes a uint32 seed
        max_tokens=None if max_tokens is None or max_tokens < 0 else max_tokens,
        ignore_eos=ignore_eos,
        grammar=grammar,
        json_schema=schema,
    )


def _same(value: Any, neutral: Any) -> bool:
    """``value`` is ``neutral`` (numbers compared as numbers, booleans only as booleans)."""
    if isinstance(value, bool) or isinstance(neutral, bool) or value is None or neutral is None:
        return type(value) is type(neutral) and value == neutral
    if isinstance(value, (int, float)) and isinstance(neutral, (int, float)):
        return value == neutral
    return type(value) is type(neutral) and value == neutral


def constraint(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(grammar, JSON schema as text) from ``response_format`` or llama-server's ``grammar``
    and ``json_schema``; at most one of them."""
    given = [name for name in ("response_format", "grammar", "json_schema")
             if body.get(name) not in (None, {"type": "text"})]
    if len(given) > 1:
        raise bad(f"give one of {' and '.join(repr(g) for g in given)}: each constrains the "
                  "whole answer.", given[1])
    grammar = body.get("grammar")
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise bad("'grammar' must be a llama.cpp GBNF grammar (a string with a rule "
                      "'root').", "grammar")
        return grammar, None
    if body.get("json_schema") is not None:
        return None, _schema_text(body["json_schema"], "json_schema")
    fmt = body.get("response_format")
    if fmt is None:
        return None, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None, None
    if kind == "json_object":  # any JSON object (llama-server also takes a schema here)
        schema = fmt.get("schema")
        return None, _schema_text({"type": "object"} if schema is None else schema,
                                  "response_format.schema")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise bad("'response_format.json_schema' must be an object with a 'schema' (and a "
                      "'name'), e.g. {\"name\": \"answer\", \"schema\": {\"type\": \"object\", "
                      "...}}.", "response_format.json_schema")
        return None, _schema_text(spec["schema"], "response_format.json_schema.schema")
    raise bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
              "response_format")


def _schema_text(schema: Any, param: str) -> str:
    if not isinstance(schema, dict):
        raise bad(f"'{param}' must be a JSON schema object.", param)
    return json.dumps(schema)
