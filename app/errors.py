"""Errors a user can meet, each with its cause and what to do about it.

The engine raises these; the protocol carries them as ``error`` events with a ``code``;
the client raises the same class again on its side, so the GUI, the CLI and the tests
all catch one type per failure.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class. ``code`` names the failure on the wire; ``hint`` says what to do."""

    code = "engine_error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ModelFileError(EngineError):
    """The file is not a GGUF model, or it is damaged (truncated, wrong header)."""

    code = "model_file"


class MissingShardError(ModelFileError):
    """A split model (-0000k-of-0000N.gguf) lacks one or more of its shards."""

    code = "missing_shard"


class UnsupportedArchitectureError(ModelFileError):
    """llama.cpp in this build does not know the model's architecture."""

    code = "unsupported_architecture"


class OutOfMemoryError(EngineError):
    """The requested placement does not fit the memory of the devices it names."""

    code = "out_of_memory"


class PlacementError(EngineError):
    """The placement plan names a device the build lacks, or is inconsistent."""

    code = "placement"


class NoModelLoadedError(EngineError):
    """A request needs a model and none is loaded."""

    code = "no_model"


class EngineBusyError(EngineError):
    """A load or unload while a job runs or chats wait (chats wait their turn instead), or
    any job while the engine shuts down."""

    code = "busy"


class TelemetryUnavailableError(EngineError):
    """Routing telemetry needs MoE Desk's llama.cpp patch, and this build lacks it."""

    code = "telemetry_unavailable"


class ProtocolError(EngineError):
    """A message broke the protocol: malformed, oversized, unknown method, bad params."""

    code = "bad_request"


class MessageTooLargeError(ProtocolError):
    code = "too_large"


class AuthenticationError(ProtocolError):
    """The client did not present the engine's token first."""

    code = "unauthorized"


class VersionMismatchError(ProtocolError):
    code = "version_mismatch"


class LoadCancelledError(EngineError):
    """The user cancelled a load before it finished; nothing is loaded."""

    code = "cancelled"


class GrammarError(EngineError):
    """A chat's grammar or JSON schema (constrained output) that llama.cpp cannot use."""

    code = "grammar"


class ChatTemplateError(EngineError):
    """The model's chat template cannot express this chat (tools it has no place for, turns
    in an order it refuses)."""

    code = "chat_template"


class ContextOverflowError(EngineError):
    """A conversation longer than the context, refused under the "stop" context policy (a
    policy that leaves earlier turns out of the prompt would have answered it)."""

    code = "context_overflow"


class EngineDiedError(EngineError):
    """The engine process ended (crash, out of memory, killed) while the client used it."""

    code = "engine_died"

    def __init__(self, message: str, hint: str = "", returncode: int | None = None,
                 log_tail: str = "") -> None:
        super().__init__(message, hint)
        self.returncode = returncode  # negative: killed by that signal; None: still running
        self.log_tail = log_tail


ERRORS_BY_CODE: dict[str, type[EngineError]] = {
    cls.code: cls
    for cls in (
        EngineError,
        ModelFileError,
        MissingShardError,
        UnsupportedArchitectureError,
        OutOfMemoryError,
        PlacementError,
        NoModelLoadedError,
        EngineBusyError,
        TelemetryUnavailableError,
        LoadCancelledError,
        GrammarError,
        ChatTemplateError,
        ContextOverflowError,
        ProtocolError,
        MessageTooLargeError,
        AuthenticationError,
        VersionMismatchError,
        EngineDiedError,
    )
}


def error_from_wire(data: dict[str, str]) -> EngineError:
    """Rebuild the exception an ``error`` event describes."""
    cls = ERRORS_BY_CODE.get(str(data.get("code", "")), EngineError)
    return cls(str(data.get("message", "engine error")), str(data.get("hint", "")))
