"""GGUF model files: their headers (parsed locally or over HTTP ranges), what they hold, and the
limits llama.cpp checks, without llama.cpp. Below the engine and the advisor, which use it."""
