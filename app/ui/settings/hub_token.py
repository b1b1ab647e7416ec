"""The Hub token, through app.hub.token where it exists (keyring, HF_TOKEN wins), else the
keyring directly. Never written to a file."""

from __future__ import annotations

import os

try:
    from app.hub import token as _hub_token
except ImportError:  # the hub engineer's module is not there yet
    _hub_token = None

SERVICE, USERNAME = "moedesk", "huggingface-token"


def describe() -> str:
    """Where the token comes from now, in words (never the token itself)."""
    if _hub_token is not None:
        source = _hub_token.token_source()
        return {"environment": "from HF_TOKEN in the environment",
                "keyring": "saved in the system keyring"}.get(source or "", "not set")
    if os.environ.get("HF_TOKEN"):
        return "from HF_TOKEN in the environment"
    try:
        import keyring

        return "saved in the system keyring" if keyring.get_password(SERVICE, USERNAME) else "not set"
    except Exception:
        return "not set (the system keyring cannot be read)"


def save(token: str) -> None:
    """Keep the token in the keyring; raises with the cause and the fix when it cannot."""
    if _hub_token is not None:
        _hub_token.save_token(token)
        return
    import keyring

    token = token.strip()
    if not token or " " in token:
        raise ValueError("That is not a Hub access token (copy it from huggingface.co > "
                         "Settings > Access Tokens; it starts with 'hf_').")
    keyring.set_password(SERVICE, USERNAME, token)


def delete() -> None:
    if _hub_token is not None:
        _hub_token.delete_token()
        return
    import keyring

    keyring.delete_password(SERVICE, USERNAME)
