"""Autotune from the desktop app: a panel on the Advisor page and the job that drives the engine."""

from app.ui.tune.panel import TunePanel, TuneRequest
from app.ui.tune.runner import TuneRunner

__all__ = ["TunePanel", "TuneRequest", "TuneRunner"]
