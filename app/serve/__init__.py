"""Serve the loaded model to other tools over OpenAI's HTTP API (Qt-free).

``OpenAIServer`` (``app.serve.http``) embeds in the GUI; ``moedesk-cli serve`` (``app.serve.cli``)
runs it headless.
"""

from app.serve.http import DEFAULT_HOST, DEFAULT_PORT, OpenAIServer

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "OpenAIServer"]
