"""Hugging Face Hub: search GGUF repos, group their files into quantizations (downloads come later)."""
