"""The Advisor page: this machine, the plan for a model (verdict, memory, speed), its controls."""

from app.ui.advisor.demo import demo_page
from app.ui.advisor.page import AdvisorPage

__all__ = ["AdvisorPage", "demo_page"]
