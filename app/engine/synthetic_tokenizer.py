"""A small but real byte-level BPE tokenizer for synthetic models.

llama.cpp's "gpt2" tokenizer model with the "qwen2" pre-tokenizer: the 256 byte tokens in
GPT-2's byte-to-unicode form (so any UTF-8 text round-trips), a few hundred merges learned from
a built-in text, Qwen3's special tokens and its ChatML chat template.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

import gguf

# Qwen3's token ids for its special tokens in a 151936-token vocabulary: a model with that
# vocabulary gets the same ids, so prompts and stop tokens look exactly like the real model's.
QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<think>": 151667,
    "</think>": 151668,
}
# HF marks <think> and </think> as added but not special, so they are USER_DEFINED in GGUF.
_CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen3's chat template, reduced to what a chat needs: system/user/assistant/tool turns,
# reasoning stripped from earlier assistant turns, and enable_thinking=false support.
CHAT_TEMPLATE = """\
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if message.role == 'assistant' %}
        {%- if '</think>' in content %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {{- '<|im_start|>user\\n<tool_response>\\n' + content }}
        {{- '\\n</tool_response><|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

# The text the merges are learned from: plain English, chat words and a little code, so that
# common words become single tokens and prompts tokenize to fewer tokens than bytes.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. The user asks a question and the assistant
answers it. You are a helpful assistant. Please think step by step before you answer.
Mixture of experts models route every token to a few experts in each layer; the router
chooses the experts, and the experts that are chosen most often are the hot experts.
This is a synthetic model: its weights are random, so what it says has no meaning, but it
loads, it runs and it is as large as the real one. The system prompt tells the model who
it is. The model reads the prompt, then it writes one token after another until it stops.
def main(argv: list[str] | None = None) -> int:
    return 0
for i in range(10):
    print("hello, world", i)
Hello! How are you today? I am fine, thank you. What would you like to talk about?
In the beginning there was the word, and the word was with the tokenizer.
Memory, bandwidth, prefill, decode, tokens per second, layers, experts, shards.
"""
_WORD_RE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+""")


@dataclass(frozen=True)
class Vocab:
    """What goes into the tokenizer.* keys of a GGUF file."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]

    @property
    def eos_id(self) -> int:
        return self.special_ids["<|im_end|>"]

    @property
    def bos_id(self) -> int:
        return self.special_ids["<|endoftext|>"]


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, in GPT-2's token order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return {b: mapping[b] for b in order}


def _learn_merges(limit: int) -> list[tuple[str, str]]:
    """Classic BPE training on _CORPUS; ties broken by the pair itself so it is deterministic."""
    encode = byte_to_unicode()
    words: Counter[tuple[str, ...]] = Counter(
        tuple(encode[b] for b in w.encode()) for w in _WORD_RE.findall(_CORPUS)
    )
    merges: list[tuple[str, str]] = []
    while len(merges) < limit:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            for pair in pairwise(word):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = Counter({_merge_word(w, best): f for w, f in words.items()})
    return merges


def _merge_word(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def build_vocab(n_vocab: int) -> Vocab:
    """A vocabulary of exactly ``n_vocab`` tokens: bytes, learned merges, specials, padding.

    With Qwen3's size (151936) the special tokens sit at Qwen3's ids and the gap is filled
    with unused ``[PADn]`` tokens, as convert_hf_to_gguf.py pads real Qwen vocabularies.
    """
    specials = list(QWEN_SPECIAL_IDS)
    if n_vocab < 256 + len(specials):
        raise ValueError(f"n_vocab {n_vocab} is too small: it needs 256 bytes + {len(specials)}")
    qwen_layout = n_vocab > max(QWEN_SPECIAL_IDS.values())
    room = (min(QWEN_SPECIAL_IDS.values()) if qwen_layout else n_vocab - len(specials)) - 256
    tokens = list(byte_to_unicode().values())
    merges = _learn_merges(room)
    seen = set(tokens)
    for left, right in merges:
        if left + right not in seen:  # two merges can spell the same token
            seen.add(left + right)
            tokens.append(left + right)
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)

    if qwen_layout:
        special_ids = dict(QWEN_SPECIAL_IDS)
    else:
        special_ids = {name: len(tokens) + i for i, name in enumerate(specials)}
    by_id = {i: name for name, i in special_ids.items()}
    for i in range(len(tokens), n_vocab):
        name = by_id.get(i)
        if name is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        else:
            tokens.append(name)
            control = name in _CONTROL_TOKENS
            types.append(int(gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED))
    return Vocab(tokens, types, [f"{a} {b}" for a, b in merges], special_ids)


def add_tokenizer(writer: gguf.GGUFWriter, vocab: Vocab) -> None:
    """Write the tokenizer.* keys as convert_hf_to_gguf.py writes them for Qwen3."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_pad_token_id(vocab.bos_id)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
