"""Qt widgets (issue 5)."""
