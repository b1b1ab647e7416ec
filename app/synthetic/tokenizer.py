"""A small but real byte-level BPE tokenizer for synthetic models.

llama.cpp's "gpt2" tokenizer model: the 256 byte tokens in GPT-2's byte-to-unicode form (so any
UTF-8 text round-trips), a few hundred merges learned from a built-in text, and a model family's
special tokens, pre-tokenizer name and chat template (``FAMILIES``): Qwen3's ChatML, DeepSeek-V3,
Kimi-K2, GLM-4.5 and gpt-oss (harmony). With the family's real vocabulary size the special
tokens sit at their real ids, so prompts and stop tokens look exactly like the real model's.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from itertools import pairwise

import gguf

# Qwen3's token ids for its special tokens in a 151936-token vocabulary.
QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<think>": 151667,
    "</think>": 151668,
}

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


@dataclass(frozen=True)
class TokenizerFamily:
    """What a model family's GGUF says about its tokenizer (convert_hf_to_gguf.py's output)."""

    pre: str  # llama.cpp's pre-tokenizer name
    special_ids: dict[str, int]  # special token -> its id in the real vocabulary
    control: frozenset[str]  # the special tokens HF marks special (CONTROL); the rest USER_DEFINED
    bos: str
    eos: str
    pad: str
    add_bos: bool = False
    eot: str = ""  # GLM: the end of a turn besides eos
    eom: str = ""  # GLM: the end of a message that awaits a tool's result
    template_file: str = ""  # in app/synthetic/templates/ (empty: CHAT_TEMPLATE)

    @property
    def chat_template(self) -> str:
        if not self.template_file:
            return CHAT_TEMPLATE
        return resources.files("app.synthetic").joinpath("templates", self.template_file).read_text()


def _ids(first: int, names: str) -> dict[str, int]:
    """Consecutive ids from ``first`` for the space-separated ``names`` ("-" skips an id)."""
    return {name: first + i for i, name in enumerate(names.split()) if name != "-"}


_DEEPSEEK_TOOLS = ("<｜tool▁calls▁begin｜> <｜tool▁calls▁end｜> <｜tool▁call▁begin｜> <｜tool▁call▁end｜> "
                   "<｜tool▁outputs▁begin｜> <｜tool▁outputs▁end｜> <｜tool▁output▁begin｜> "
                   "<｜tool▁output▁end｜> <｜tool▁sep｜>")
_DEEPSEEK = {**_ids(0, "<｜begin▁of▁sentence｜> <｜end▁of▁sentence｜> <｜▁pad▁｜>"),
             **_ids(128798, "<think> </think> - - - <｜User｜> <｜Assistant｜> - " + _DEEPSEEK_TOOLS)}
_KIMI = {**_ids(163584, "[BOS] [EOS] <|im_end|> <|im_user|> <|im_assistant|> - <|start_header_id|> "
                        "<|end_header_id|> - [EOT] <|im_system|> <|tool_calls_section_begin|> "
                        "<|tool_calls_section_end|> <|tool_call_begin|> <|tool_call_argument_begin|> "
                        "<|tool_call_end|> - <|im_middle|> <|media_start|> <|media_content|> "
                        "<|media_end|> <|media_pad|>")}
_GLM_CONTROL = ("<|endoftext|> [MASK] [gMASK] [sMASK] <sop> <eop> <|system|> <|user|> <|assistant|> "
                "<|observation|>")
_GLM = {**_ids(151329, _GLM_CONTROL),
        **_ids(151350, "<think> </think> <tool_call> </tool_call> <tool_response> </tool_response> "
                       "<arg_key> </arg_key> <arg_value> </arg_value>")}
_HARMONY = _ids(199998, "<|startoftext|> <|endoftext|> - - <|return|> <|constrain|> - <|channel|> "
                        "<|start|> <|end|> <|message|> - - - <|call|>")

FAMILIES: dict[str, TokenizerFamily] = {
    # HF marks <think> and </think> as added but not special, so they are USER_DEFINED in GGUF
    "qwen3": TokenizerFamily("qwen2", QWEN_SPECIAL_IDS,
                             frozenset(("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
                             bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>"),
    "deepseek-v3": TokenizerFamily("deepseek-v3", _DEEPSEEK, frozenset(_DEEPSEEK) - {"<think>", "</think>"},
                                   bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>",
                                   pad="<｜end▁of▁sentence｜>", add_bos=True,
                                   template_file="deepseek-v3.jinja"),
    "kimi-k2": TokenizerFamily("kimi-k2", _KIMI, frozenset(_KIMI), bos="[BOS]", eos="<|im_end|>",
                               pad="[EOS]", template_file="kimi-k2.jinja"),
    "glm4": TokenizerFamily("glm4", _GLM, frozenset(_GLM_CONTROL.split()), bos="[gMASK]",
                            eos="<|endoftext|>", pad="<|endoftext|>", eot="<|user|>",
                            eom="<|observation|>", template_file="glm4.jinja"),
    "gpt-oss": TokenizerFamily("gpt-4o", _HARMONY, frozenset(_HARMONY), bos="<|startoftext|>",
                               eos="<|return|>", pad="<|endoftext|>", template_file="gpt-oss.jinja"),
}

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
    family: TokenizerFamily

    @property
    def eos_id(self) -> int:
        return self.special_ids[self.family.eos]

    @property
    def bos_id(self) -> int:
        return self.special_ids[self.family.bos]


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


@functools.lru_cache(maxsize=8)
def build_vocab(n_vocab: int, family: str = "qwen3") -> Vocab:
    """A vocabulary of exactly ``n_vocab`` tokens: bytes, learned merges, specials, padding.

    When ``n_vocab`` is the family's real size (or larger) the special tokens sit at their real
    ids and the ids between are filled with bytes, merges and then unused ``[PADn]`` tokens, as
    convert_hf_to_gguf.py pads real vocabularies; a smaller vocabulary puts them last.
    """
    fam = FAMILIES[family]
    specials = list(fam.special_ids)
    if n_vocab < 256 + len(specials):
        raise ValueError(f"n_vocab {n_vocab} is too small: it needs 256 bytes + {len(specials)}")
    if n_vocab > max(fam.special_ids.values()):
        special_ids = dict(fam.special_ids)
    else:
        special_ids = {name: n_vocab - len(specials) + i for i, name in enumerate(specials)}
    merges = _learn_merges(n_vocab - len(specials) - 256)
    normal = list(byte_to_unicode().values())
    seen = set(normal)
    for left, right in merges:
        if left + right not in seen:  # two merges can spell the same token
            seen.add(left + right)
            normal.append(left + right)
    by_id = {i: name for name, i in special_ids.items()}
    tokens: list[str] = []
    types: list[int] = []
    next_normal = iter(normal)
    for i in range(n_vocab):
        name = by_id.get(i)
        if name is not None:
            tokens.append(name)
            control = name in fam.control
            types.append(int(gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED))
            continue
        token = next(next_normal, None)
        tokens.append(token if token is not None else f"[PAD{i}]")
        types.append(int(gguf.TokenType.NORMAL if token is not None else gguf.TokenType.UNUSED))
    return Vocab(tokens, types, [f"{a} {b}" for a, b in merges], special_ids, fam)


def add_tokenizer(writer: gguf.GGUFWriter, vocab: Vocab) -> None:
    """Write the tokenizer.* keys as convert_hf_to_gguf.py writes them for the family."""
    fam = vocab.family
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(fam.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_pad_token_id(vocab.special_ids[fam.pad])
    writer.add_bos_token_id(vocab.bos_id)
    if fam.eot:
        writer.add_eot_token_id(vocab.special_ids[fam.eot])
    if fam.eom:
        writer.add_eom_token_id(vocab.special_ids[fam.eom])
    writer.add_add_bos_token(fam.add_bos)
    writer.add_chat_template(fam.chat_template)
