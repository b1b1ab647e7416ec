"""Small widgets and helpers shared by the pages (theme, background work, engine status)."""
