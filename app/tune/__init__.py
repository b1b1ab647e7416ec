"""Measured placement tuning: strategies under a VRAM budget, short real runs, autotune, reports."""
