"""Hugging Face Hub: search GGUF repos, group their files into quantizations, download them."""
