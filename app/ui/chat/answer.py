"""An answer as the Chat page asks for it and follows it: plain Python, no Qt.

``history_for`` is what the engine is sent for a conversation's next answer; ``StreamingAnswer``
is what the page knows of the answer while it streams (its ids and the text so far).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.protocol import ChatMessage
from app.store import Conversation, Message
from app.ui.chat.segments import split_thinking


@dataclass
class StreamingAnswer:
    """The answer being generated."""

    chat_id: int  # the EngineController's id for it
    conversation_id: int
    message_id: int  # its message in the store (state "partial" until it ends)
    text: str = ""
    saved_at: float = 0.0  # time.monotonic() when the text was last written to the store
    tokens: int = 0
    prefix: str = ""  # a continued answer: its text before this generation


def continuable(message: Message) -> bool:
    """An answer cut short (stopped, interrupted, or out of tokens) that may go on."""
    if message.role != "assistant" or not message.content.strip():
        return False
    return message.state == "partial" or (message.stats is not None
                                          and message.stats.finish_reason == "length")


def history_for(conversation: Conversation, messages: list[Message]) -> list[ChatMessage]:
    """The system prompt (if any), then the conversation's messages, as the engine is sent them."""
    history = [ChatMessage("system", conversation.system_prompt)] if conversation.system_prompt else []
    for message in messages:
        if message.role == "user":
            history.append(ChatMessage("user", message.content))
        elif message.role == "assistant" and message.content:
            # earlier thinking is not sent back (reasoning models' chat templates drop it too)
            history.append(ChatMessage("assistant", split_thinking(message.content)[2]))
    return history
