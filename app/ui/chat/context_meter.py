"""How much of the model's context the open conversation uses: a bar under the messages,
set after each answer from what the engine counted (prompt plus answer tokens)."""

from __future__ import annotations

from PySide6.QtWidgets import QProgressBar, QWidget

from app.ui.widgets.counts import count_text


class ContextMeter(QProgressBar):
    """'Context: 430 of 512 tokens (84%)'; empty until the conversation's first answer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextVisible(True)
        self.setMaximumHeight(self.fontMetrics().height() + 6)
        self.used: int | None = None
        self.n_ctx: int | None = None
        self.show_use(None, None)

    def show_use(self, used: int | None, n_ctx: int | None, dropped: int = 0) -> None:
        """``used`` tokens of ``n_ctx`` (None: unknown); ``dropped``: messages the last answer's
        prompt left out, said in the tooltip."""
        self.used, self.n_ctx = used, n_ctx
        if used is None or not n_ctx:
            self.setRange(0, 1)
            self.setValue(0)
            self.setFormat("Context: not used yet" if n_ctx else "Context: no model loaded")
            self.setToolTip("")
            return
        self.setRange(0, n_ctx)
        self.setValue(min(used, n_ctx))
        self.setFormat(f"Context: {used:,} of {n_ctx:,} tokens ({100 * used / n_ctx:.0f}%)")
        tip = "Tokens of the last prompt and its answer, of the model's context."
        if dropped:
            tip += (f" The conversation is longer: {count_text(dropped, 'earlier message')} "
                    "were left out of the last prompt.")
        self.setToolTip(tip)
