"""One chat message on screen: Markdown prose, code blocks with a copy button, a collapsed
<think> part, a stats line, and the message's actions (copy, edit, regenerate).

A streaming answer is redrawn by ``MessageWidget.show_text``: it re-splits the text and
updates only the segments that changed (normally just the last one), so a long answer costs
the same per redraw as a short one.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication, QPalette, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.store import Message
from app.ui.chat.answer import continuable
from app.ui.chat.highlight import code_html
from app.ui.chat.segments import Segment, segments
from app.ui.widgets.counts import count_text


def stats_line(message: Message) -> str:
    """'128 tokens · prefill 512 t/s · decode 38.2 t/s · first token 0.21 s · model'."""
    s = message.stats
    if s is None:
        return ""
    parts = [count_text(s.completion_tokens, "token"), f"prefill {s.prefill_tps:.0f} t/s"]
    if s.decode_tps > 0:  # a one-token answer decoded nothing
        parts.append(f"decode {s.decode_tps:.1f} t/s")
    parts.append(f"first token {s.ttft_s:.2f} s")
    if s.model:
        parts.append(s.model)
    if s.finish_reason == "cancelled":
        parts.append("stopped")
    elif s.finish_reason == "length":
        parts.append("hit the token limit")
    return " · ".join(parts)


def context_note(message: Message) -> str:
    """Why an answer may not remember the start: the messages its prompt left out."""
    dropped = message.stats.messages_dropped if message.stats else 0
    if not dropped:
        return ""
    return (f"{count_text(dropped, 'earlier message')} left out of the prompt for this answer: "
            "the conversation no longer fits the model's context (they are still here).")


class AutoHeightBrowser(QTextBrowser):
    """Read-only rich text exactly as tall as its content: the message list scrolls, not it."""

    def __init__(self, parent: QWidget | None = None, *, monospace: bool = False) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.viewport().setAutoFillBackground(False)  # the message's background shows through
        self.setAutoFillBackground(False)
        if monospace:
            self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
            self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self.source_text = ""

    def _fit(self, size: object) -> None:
        height = self.document().size().height()
        self.setFixedHeight(math.ceil(height) + 2 * self.frameWidth())

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self.height())


class TextSegment(AutoHeightBrowser):
    kind = "text"

    def show_segment(self, segment: Segment) -> None:
        if segment.text != self.source_text:
            self.source_text = segment.text
            self.setMarkdown(segment.text)


class CodeSegment(QFrame):
    """A fenced code block: language, a Copy button, the code in a fixed-width font."""

    kind = "code"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setBackgroundRole(QPalette.ColorRole.AlternateBase)
        self.setAutoFillBackground(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 4)
        layout.setSpacing(0)
        header = QHBoxLayout()
        self.lang = QLabel()
        self.lang.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.copy_button = QToolButton(text="Copy")
        self.copy_button.setToolTip("Copy this code block")
        self.copy_button.setAutoRaise(True)
        self.copy_button.clicked.connect(self.copy)
        header.addWidget(self.lang)
        header.addStretch(1)
        header.addWidget(self.copy_button)
        layout.addLayout(header)
        self.code = AutoHeightBrowser(self, monospace=True)
        self.code_lang = ""
        layout.addWidget(self.code)

    def show_segment(self, segment: Segment) -> None:
        self.lang.setText(segment.lang or "code")
        if segment.text != self.code.source_text or segment.lang != self.code_lang:
            self.code.source_text, self.code_lang = segment.text, segment.lang
            self._render()

    def _render(self) -> None:
        """The code with syntax colours for its language (a light or dark style, as the theme)."""
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        coloured = code_html(self.code.source_text, self.code_lang, dark)
        if coloured is None:
            self.code.setPlainText(self.code.source_text)
        else:
            self.code.setHtml(coloured)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        super().changeEvent(event)
        # (palette changes also come while __init__ builds the frame, before the code view)
        code = getattr(self, "code", None)
        if event.type() == QEvent.Type.PaletteChange and code is not None and code.source_text:
            self._render()  # the theme changed: the other style

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code.source_text)
        self.copy_button.setText("Copied")
        # the button as context: the timer is dropped if the message is deleted first
        QTimer.singleShot(1500, self.copy_button, lambda: self.copy_button.setText("Copy"))


class ThinkSegment(QFrame):
    """A reasoning model's thinking: one line, collapsed, that expands on a click."""

    kind = "think"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.toggle = QToolButton(checkable=True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.toggled.connect(self.set_expanded)
        self.body = AutoHeightBrowser(self)
        self.body.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        palette = self.body.palette()
        palette.setColor(QPalette.ColorRole.Text, palette.color(QPalette.ColorRole.PlaceholderText))
        self.body.setPalette(palette)
        self.body.hide()
        layout.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.body)

    def show_segment(self, segment: Segment) -> None:
        words = len(segment.text.split())
        self.toggle.setText(f"Thought ({words} words)" if segment.closed else f"Thinking… ({words} words)")
        if segment.text != self.body.source_text:
            self.body.source_text = segment.text
            self.body.setPlainText(segment.text)

    def set_expanded(self, expanded: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)


SEGMENT_WIDGETS = {"text": TextSegment, "code": CodeSegment, "think": ThinkSegment}


class MessageWidget(QFrame):
    """A message: who said it, its body, how it was generated, what one can do with it."""

    edit_requested = Signal(int)  # message id
    regenerate_requested = Signal()
    continue_requested = Signal()

    def __init__(self, message: Message, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = message
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.AlternateBase if message.role == "user"
                               else QPalette.ColorRole.Base)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(4)
        header = QHBoxLayout()
        who = QLabel("You" if message.role == "user" else "Assistant")
        font = who.font()
        font.setBold(True)
        who.setFont(font)
        self.badge = QLabel()
        self.badge.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        header.addWidget(who)
        header.addWidget(self.badge, 1)
        self.copy_button = QToolButton(text="Copy", autoRaise=True, toolTip="Copy the whole message")
        self.copy_button.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.message.content))
        self.edit_button = QToolButton(text="Edit", autoRaise=True,
                                       toolTip="Edit this message and send it again")
        self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.message.id))
        self.regenerate_button = QToolButton(text="Regenerate", autoRaise=True,
                                             toolTip="Answer this again")
        self.regenerate_button.clicked.connect(self.regenerate_requested)
        self.continue_button = QToolButton(text="Continue", autoRaise=True,
                                           toolTip="Let the answer go on from where it stopped")
        self.continue_button.clicked.connect(self.continue_requested)
        for button in (self.copy_button, self.edit_button, self.continue_button, self.regenerate_button):
            header.addWidget(button)
        self.edit_button.setVisible(message.role == "user")
        self.regenerate_button.hide()
        self.continue_button.hide()
        layout.addLayout(header)
        self.context_note = QLabel(wordWrap=True)
        self.context_note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(self.context_note)
        self.body = QVBoxLayout()
        self.body.setSpacing(4)
        layout.addLayout(self.body)
        self.stats = QLabel()
        self.stats.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.stats)
        self._segments: list[QWidget] = []
        self.set_message(message)

    def set_message(self, message: Message) -> None:
        """Show a stored message (complete, partial or failed) with its stats line."""
        self.message = message
        self.show_text(message.content)
        self.stats.setText(stats_line(message))
        self.stats.setVisible(bool(self.stats.text()))
        self.context_note.setText(context_note(message))
        self.context_note.setVisible(bool(self.context_note.text()))
        badge = ""
        if message.state == "partial":
            stopped = message.stats is not None and message.stats.finish_reason == "cancelled"
            badge = "stopped" if stopped else "partial answer (interrupted)"
        if message.error:
            badge = (badge + ": " if badge else "") + message.error
        elif message.state == "error":
            badge = "failed"
        self.badge.setText(badge)
        self.badge.setToolTip(badge)

    def show_streaming(self, text: str) -> None:
        self.badge.setText("answering…")
        self.show_text(text)

    def show_text(self, text: str) -> None:
        """Redraw the body from ``text``, touching only the segments that changed."""
        parts = segments(text)
        for index, segment in enumerate(parts):
            if index < len(self._segments) and getattr(self._segments[index], "kind", "") != segment.kind:
                self._drop_segments_from(index)
            if index >= len(self._segments):
                widget = SEGMENT_WIDGETS[segment.kind](self)
                self.body.addWidget(widget)
                self._segments.append(widget)
            self._segments[index].show_segment(segment)  # type: ignore[attr-defined]
        self._drop_segments_from(len(parts))

    def set_regenerable(self, regenerable: bool) -> None:
        """The last answer, no answer streaming: it may be answered again, or, cut short, go on."""
        self.regenerate_button.setVisible(regenerable)
        self.continue_button.setVisible(regenerable and continuable(self.message))

    def segment_widgets(self) -> list[QWidget]:
        return list(self._segments)

    def _drop_segments_from(self, index: int) -> None:
        for widget in self._segments[index:]:
            self.body.removeWidget(widget)
            widget.setParent(None)  # off screen now, not when deleteLater gets to it
            widget.deleteLater()
        del self._segments[index:]
