"""The Models page: the download wizard (Hub search, quants with verdicts, downloads) and the library."""

from app.ui.models.demo import demo_page
from app.ui.models.page import ModelsPage

__all__ = ["ModelsPage", "demo_page"]
