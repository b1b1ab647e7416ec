"""The one contract between the engine process and its clients (GUI, CLI, tests).

See docs/protocol.md for the prose version. In short:

* Transport: a Unix domain socket (0600, in a 0700 directory) where the platform has them,
  else TCP on 127.0.0.1. The first message must be ``hello`` with the engine's secret token.
* Framing: a 4-byte big-endian unsigned length, then that many bytes of UTF-8 JSON (an object).
  Frames over ``MAX_MESSAGE_BYTES`` are refused with a ``too_large`` error.
* Client -> engine: requests ``{"id": int, "method": str, "params": {...}}``.
* Engine -> client: events ``{"event": str, "request": int | null, "data": {...}}``.
  Each request ends with exactly one terminal event, ``done`` (data: the result) or
  ``error`` (data: ``{"code", "message", "hint"}``). Before it, a request may stream
  ``progress`` (load) or ``token`` (chat) events tagged with its id. ``stats`` and
  ``routing`` events are pushed with ``request: null`` while the client is subscribed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import reprlib
import struct
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from app.engine.placement import PlacementPlan
from app.errors import MessageTooLargeError, ProtocolError

PROTOCOL_VERSION = 2
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
HEADER = struct.Struct(">I")

# Requests a client may send.
METHODS = ("hello", "info", "load", "unload", "chat", "cancel", "stats", "routing", "subscribe",
           "shutdown")
# Events the engine sends; ``done`` and ``error`` end a request.
EVENTS = ("progress", "token", "stats", "routing", "done", "error")
TERMINAL_EVENTS = ("done", "error")


# --- framing -------------------------------------------------------------------------------


def encode_frame(message: dict[str, Any]) -> bytes:
    """One message as bytes on the wire: length prefix + compact JSON."""
    try:
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates (JSON allows "\ud800", and an error may echo one back): escaped
        # JSON carries them, raw UTF-8 cannot
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"message of {len(body)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
        )
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse one frame's body; anything but a JSON object is a ProtocolError."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed message: {exc}", "Send UTF-8 JSON objects.") from exc
    except RecursionError:  # a few KB of "[[[[..." nest deeper than Python's parser goes
        raise ProtocolError("malformed message: JSON nested too deeply",
                            "Send UTF-8 JSON objects of ordinary depth.") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


# --- plain data carried in params and results ---------------------------------------------


@dataclass
class Hello:
    token: str
    protocol: int = PROTOCOL_VERSION
    client: str = ""


@dataclass
class LoadParams:
    model: str  # path to a .gguf file, or to any shard of a split model
    placement: PlacementPlan = field(default_factory=PlacementPlan)
    telemetry: bool = True  # count routed expert selections (needs the patched build)
    # With placement.expert_cache on: routing counts [layer][expert] of an earlier run of this
    # model (LoadResult.expert_cache.profile), ranking each layer's experts for the cache; None:
    # the engine makes them with a short warm-up prefill at load.
    expert_profile: list[list[int]] | None = None


@dataclass
class ToolCall:
    """A function call an assistant made (OpenAI's ``tool_calls`` entry)."""

    id: str
    name: str
    arguments: str  # JSON text, as OpenAI carries it


@dataclass
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)  # an assistant's calls
    tool_call_id: str = ""  # a tool message: the call whose result it carries
    name: str = ""  # a tool message: the function's name (some templates show it)
    # an assistant's reasoning (reasoning_content): templates show it before that turn's
    # tool calls (gpt-oss's, Qwen3's), which the model needs to go on from a tool's result
    reasoning: str = ""


@dataclass
class Sampling:
    """How each token is picked. A field left None takes the model's own default (its GGUF's
    ``general.sampling.*`` keys), else MoE Desk's (``app.engine.sampling.FALLBACK``)."""

    temperature: float | None = None  # 0: greedy
    top_p: float | None = None
    top_k: int | None = None  # 0: off
    min_p: float | None = None
    typical_p: float | None = None  # 1: off
    repeat_penalty: float | None = None  # 1: off
    repeat_last_n: int | None = None  # tokens the penalties look back at (-1: the context)
    frequency_penalty: float = 0.0  # OpenAI's: minus this times a token's count so far
    presence_penalty: float = 0.0  # OpenAI's: minus this for a token seen at all
    seed: int | None = None  # None: a fresh random seed per request
    max_tokens: int | None = None  # None: until the end of the answer or of the context
    ignore_eos: bool = False  # generate max_tokens whatever the model says (benchmarks)
    # Constrained output (llama.cpp grammars): GBNF text with a rule "root", or a JSON schema
    # (as JSON text) the engine turns into one; at most one of them.
    grammar: str | None = None
    json_schema: str | None = None


class ContextPolicy(str, enum.Enum):
    """What the engine does with a conversation that outgrows the context (with room for
    the answer). Only the prompt sent leaves messages out; the conversation is the client's."""

    STOP = "stop"  # refuse it, naming the sizes (the engine's behaviour before policies)
    DROP_MIDDLE = "drop_middle"  # keep system messages, the latest turns and, longest, the first
    ROLLING_WINDOW = "rolling_window"  # keep system messages and the latest turns

    @classmethod
    def or_default(cls, value: object, default: ContextPolicy) -> ContextPolicy:
        """``value`` as a policy; ``default`` for one this version does not know (a stored
        setting from another version)."""
        try:
            return cls(value)
        except ValueError:
            return default


@dataclass
class ChatParams:
    messages: list[ChatMessage]
    sampling: Sampling = field(default_factory=Sampling)
    stop: list[str] = field(default_factory=list)
    # raw text to continue, without the chat template (OpenAI's /v1/completions); needs
    # empty ``messages``
    prompt: str | None = None
    # OpenAI's tool objects ({"type": "function", "function": {name, description,
    # parameters}}), given to the chat template as ``tools``; the template must use them
    tools: list[dict[str, Any]] = field(default_factory=list)
    # "auto", "none", "required" or a function's name: "required" and a name make the engine
    # constrain the answer to a call in the model's own tool-call format
    tool_choice: str = "auto"
    # more variables for the chat template: enable_thinking, reasoning_effort, ...
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    # a conversation longer than the context: refused (STOP) or sent with whole turns left
    # out (app.engine.context_fit); ignored for a raw ``prompt``
    context_policy: ContextPolicy = ContextPolicy.STOP
    # the last message is an answer cut short (its thinking included): the model goes on
    # from its last word instead of answering anew; the result's text is what follows it
    continue_answer: bool = False


@dataclass
class CancelParams:
    request: int  # the id of the chat or load to cancel


@dataclass
class SubscribeParams:
    stats: bool = True
    routing: bool = True
    interval_s: float = 0.25


@dataclass
class DeviceInfo:
    name: str  # ggml device name: "CPU", "CUDA0", ...
    description: str
    kind: Literal["cpu", "gpu", "igpu", "accel"]
    memory_total: int
    memory_free: int


@dataclass
class BuildInfo:
    llama_cpp_python: str
    backends: list[str]  # ggml backends in this build: "CPU", "CUDA", "Metal", ...
    devices: list[DeviceInfo]
    routing_patch: bool  # MoE Desk's llama.cpp patch is present (routing telemetry)
    system_info: str
    expert_cache_patch: bool = False  # patch 0004 is present: hot experts in VRAM (with a GPU)


@dataclass
class TensorClassPlacement:
    """Bytes of one tensor class (attention, routed_experts, ...) on one device."""

    tensor_class: str
    device: str
    bytes: int
    tensors: int


@dataclass
class ModelInfo:
    path: str
    shards: list[str]
    architecture: str
    name: str
    n_layer: int
    n_expert: int
    n_expert_used: int
    n_ctx_train: int
    n_params: int
    size_bytes: int
    chat_template: bool


@dataclass
class Allocation:
    """A buffer llama.cpp allocated at load, as its log reports it (rounded to 0.01 MiB)."""

    kind: Literal["weights", "kv_cache", "compute", "output", "recurrent_state"]
    device: str  # "CPU" for any host memory, else the GPU's name
    buffer_type: str  # llama.cpp's own name: CPU_Mapped, CPU_REPACK, CUDA0, CUDA_Host, ...
    bytes: int


PROFILE_SOURCES = {"given": "the given profile", "remembered": "this model's earlier runs",
                   "warm-up": "a warm-up prefill"}


# what a dynamic cache whose experts are in pageable memory costs, and what to do
WAITING_COPIES = ("each token waits for its expert copies (the experts are in pageable memory, "
                  "the mapped file): load with mmap off (--no-mmap) to copy them from pinned "
                  "memory while tokens decode")


@dataclass
class ExpertCacheInfo:
    """The hot-expert VRAM cache as loaded (engine patch 0004)."""

    mode: Literal["static", "dynamic"]
    available: bool
    reason: str = ""  # why not, when unavailable (the model then runs without it)
    slots: int = 0  # experts held in VRAM per cached layer
    layers: list[int] = field(default_factory=list)  # the cached layers (routed experts in RAM)
    bytes: int = 0  # VRAM the cache holds
    profile_source: Literal["given", "remembered", "warm-up", ""] = ""
    profile: list[list[int]] = field(default_factory=list)  # the counts that ranked the experts
    # dynamic: whether experts are copied in while tokens decode (from the GPU's pinned host
    # memory) or between tokens, each token waiting (from pageable memory: the mapped file)
    copies_beside_decoding: bool = True
    # dynamic: the copy policy in use; eager copies only beside decoding (between tokens each
    # copy is a token's wait): asked for with the mapped file, the engine copies thriftily
    copy_policy: Literal["thrifty", "eager", ""] = ""

    def describe(self) -> str:
        """One line for people (CLI, logs)."""
        if not self.available:
            return f"hot experts in VRAM: unavailable ({self.reason})"
        mode = f"{self.mode}, {self.copy_policy} copies" if self.copy_policy else self.mode
        line = (f"hot experts in VRAM ({mode}): {self.slots} experts in each of "
                f"{len(self.layers)} RAM layers, {self.bytes / 2**30:.2f} GiB, ranked by "
                f"{PROFILE_SOURCES.get(self.profile_source, 'nothing')}")
        if self.mode == "dynamic" and not self.copies_beside_decoding:
            line += f"; {WAITING_COPIES}"
        return line


@dataclass
class ExpertStreamInfo:
    """Routed experts streamed from the SSD as loaded (engine patch 0005)."""

    mode: Literal["advise", "cache"]
    available: bool
    reason: str = ""  # why not, when unavailable (the model then reads its mapped file as before)
    slots: int = 0  # cache mode: experts of each streamed layer held in RAM
    layers: list[int] = field(default_factory=list)  # the streamed layers (routed experts in RAM)
    bytes: int = 0  # RAM the cache holds
    io_threads: int = 0  # reads at a time

    def describe(self) -> str:
        """One line for people (CLI, logs)."""
        if not self.available:
            return f"experts from the SSD: page faults on the mapped file ({self.reason})"
        if self.mode == "advise":
            return (f"experts from the SSD: {len(self.layers)} layers, the kernel asked ahead for "
                    f"each token's experts")
        return (f"experts from the SSD: RAM cache of {self.slots} experts in each of "
                f"{len(self.layers)} layers, {self.bytes / 2**30:.2f} GiB, {self.io_threads} "
                f"reads at a time")


@dataclass
class LoadResult:
    model: ModelInfo
    placement: list[TensorClassPlacement]  # where tensors actually landed, by class and device
    expert_layers_on_gpu: list[int]  # layers whose routed experts sit in device memory
    n_ctx: int
    load_seconds: float
    telemetry: bool
    allocations: list[Allocation] = field(default_factory=list)  # what llama.cpp really took
    n_parallel: int = 1  # chats decoded at once, each with n_ctx tokens of context
    expert_cache: ExpertCacheInfo | None = None  # None: not asked for
    expert_stream: ExpertStreamInfo | None = None  # None: not asked for


@dataclass
class Progress:
    stage: str
    fraction: float


@dataclass
class Token:
    text: str
    n: int  # tokens generated so far in this request


@dataclass
class ChatResult:
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]
    prompt_tokens: int
    cached_tokens: int  # prompt tokens reused from the previous turn's KV cache
    completion_tokens: int
    prefill_tps: float
    decode_tps: float
    ttft_s: float
    queued_s: float = 0.0  # from the engine reading the request to taking a slot (not in ttft_s)
    messages_dropped: int = 0  # messages the context policy left out of the prompt

    @property
    def first_token_s(self) -> float:
        """The time to first token its client waited, less the way across the socket: a wait
        for a slot (another chat, the OpenAI server's), template and tokenizer, then ttft_s."""
        return self.queued_s + self.ttft_s


@dataclass
class DeviceMemory:
    device: str
    used: int
    total: int


@dataclass
class StorageStats:
    """What decoding read from the SSD (the engine process's storage reads: page faults on the
    mapped model and the stream's own reads), over the last decode steps (live) and since load."""

    bytes_per_token: float  # recent decode steps
    read_bps: float  # bytes/s over the recent decode steps' wall time
    total_bytes: int  # read during decode steps since load
    total_tokens: int  # tokens those steps decoded
    # the stream's share of experts found in RAM (its cache; advise mode: the page cache), and
    # in cache mode the speed its reads ran at while the engine waited for them (None without)
    ram_hit_rate: float | None = None
    stream_read_bps: float | None = None


@dataclass
class ExpertCacheStats:
    """Hot experts in VRAM since load (engine patch 0004): of the cached layers' selections in
    ubatches the cache serves (decoding), those served from VRAM (hits) and from RAM (misses);
    experts copied into VRAM (the dynamic policy's uploads)."""

    hits: int
    misses: int
    uploads: int
    # experts a prompt's ubatches took from VRAM where llama.cpp copies the experts its tokens
    # chose from RAM to the GPU (op offload), instead of copying them
    prompt_experts_from_vram: int = 0

    @property
    def hit_rate(self) -> float | None:
        """Share of the selections served from VRAM (None: none counted yet)."""
        total = self.hits + self.misses
        return self.hits / total if total else None


@dataclass
class EngineStats:
    state: Literal["idle", "loading", "generating"]
    model: str | None
    decode_tps: float  # of the running (or last) generation
    prefill_tps: float
    tokens_generated: int
    memory: list[DeviceMemory]
    rss: int
    chats_running: int = 0  # chats being generated now: 0 to n_parallel
    chats_waiting: int = 0  # chats of all clients waiting their turn (for a free slot)
    n_parallel: int = 1  # chats the loaded model decodes at once (its slots)
    storage: StorageStats | None = None  # None: no model, or the OS does not count reads
    expert_cache: ExpertCacheStats | None = None  # None: no hot experts in VRAM loaded


@dataclass
class RoutingSnapshot:
    """Routed expert selections counted since load (or the last reset)."""

    n_layer: int
    n_expert: int
    n_expert_used: int
    layers: list[int]  # the MoE layers, in order of ``counts``
    counts: list[list[int]]  # [layer][expert] selections
    tokens: int  # token evaluations counted
    hit_rate: float | None  # share of expert uses served from device memory (None: no uses)
    layer_hit_rate: list[float | None]
    # per MoE layer (as ``layers``): experts the hot-expert cache holds in VRAM now (empty
    # lists without a cache). hit_rate and layer_hit_rate count its hits as served from VRAM.
    cached: list[list[int]] = field(default_factory=list)
    # per MoE layer: selections served from VRAM, counted as ``counts`` are (a reader that
    # subtracts two snapshots gets the hit rate of the tokens between them)
    served: list[int] = field(default_factory=list)


# --- dataclass <-> JSON -------------------------------------------------------------------

T = TypeVar("T")


def to_wire(value: Any) -> Any:
    """Plain JSON-able data for a dataclass (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(cls: type[T], data: Any, where: str = "params") -> T:
    """Build ``cls`` from JSON data, checking names and types; a ProtocolError says what's wrong."""
    return typing.cast(T, _convert(cls, data, where))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        known = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ProtocolError(f"{where}: unknown field(s) {', '.join(unknown)}")
        kwargs = {}
        for name, f in known.items():
            if name in value:
                kwargs[name] = _convert(hints[name], value[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}: missing field {name}")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value is member or (value == member.value and type(value) is type(member.value)):
                return member
        allowed = ", ".join(repr(m.value) for m in tp)
        raise ProtocolError(f"{where}: {reprlib.repr(value)} is not one of {allowed}")
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            with contextlib.suppress(ProtocolError):
                return _convert(arg, value, where)
        raise ProtocolError(f"{where}: {reprlib.repr(value)} fits none of the allowed types")
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        raise ProtocolError(f"{where}: {reprlib.repr(value)} is not one of {', '.join(map(repr, args))}")
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
        raise ProtocolError(f"{where}: expected null")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ProtocolError(f"{where}: expected a number")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ProtocolError(f"{where}: expected an integer")
    if tp in (str, bool):
        if type(value) is tp:
            return value
        raise ProtocolError(f"{where}: expected {tp.__name__}")
    raise TypeError(f"unsupported type in protocol dataclass: {tp!r}")


# --- message builders ----------------------------------------------------------------------


def request(request_id: int, method: str, params: Any = None) -> dict[str, Any]:
    return {"id": request_id, "method": method, "params": to_wire(params) if params is not None else {}}


def event(name: str, request_id: int | None, data: Any = None) -> dict[str, Any]:
    return {"event": name, "request": request_id, "data": to_wire(data) if data is not None else {}}
