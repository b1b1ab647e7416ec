"""The Hugging Face access token: kept in the system keyring, never in a file or a log.

``HF_TOKEN`` in the environment wins over the keyring (as huggingface_hub does), so a headless
machine without a keyring, a CI job or a container can still reach gated repos. When no keyring
backend is available (a Linux box without a Secret Service), saving fails with a message that says
so and points at ``HF_TOKEN``: there is deliberately no plaintext fallback.
"""

from __future__ import annotations

import os
from typing import Literal

import keyring
from huggingface_hub import constants
from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

from app.hub.errors import HubError

SERVICE = "moedesk"
USERNAME = "huggingface-token"  # the keyring's "user": one Hub token per desktop user

TokenSource = Literal["environment", "keyring"]


class KeyringUnavailableError(HubError):
    """No usable system keyring: the token cannot be stored (and is not written to a file instead)."""

    def __init__(self, cause: BaseException) -> None:
        reason = "no keyring backend is available" if isinstance(cause, NoKeyringError) else str(cause)
        super().__init__(
            f"The system keyring cannot be used ({reason}). MoE Desk keeps the Hub token only in the "
            "keyring, never in a plain file. Set HF_TOKEN in the environment instead, or start a "
            "keyring service (GNOME Keyring, KWallet, macOS Keychain, Windows Credential Manager)."
        )


class InvalidTokenError(HubError):
    """What was entered cannot be a Hub token."""

    def __init__(self) -> None:
        super().__init__(
            "That is not a Hub access token (it is empty or has spaces in it). Copy the token "
            "from your Hugging Face account's Settings > Access Tokens page (it starts with 'hf_')."
        )


def hub_endpoint() -> str:
    """The Hub to talk to: ``HF_ENDPOINT`` if set (read now, not at import), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def get_token() -> str | None:
    """The token to send to the Hub: ``HF_TOKEN``, else the keyring's, else None.

    A keyring that cannot be read counts as no token (reading must not fail a public download).
    """
    return _lookup()[0]


def token_source() -> TokenSource | None:
    """Where ``get_token()`` finds the token, for a status line ("signed in via HF_TOKEN")."""
    return _lookup()[1]


def save_token(token: str) -> str:
    """Store ``token`` in the system keyring; return the keyring's name for a confirmation message.

    Raises ``InvalidTokenError`` for an empty or spaced string, ``KeyringUnavailableError`` when no
    keyring can store it.
    """
    token = token.strip()
    if not token or any(ch.isspace() for ch in token):
        raise InvalidTokenError()
    try:
        keyring.set_password(SERVICE, USERNAME, token)
    except KeyringError as error:
        raise KeyringUnavailableError(error) from None  # the cause could quote the token: drop it
    return keyring_name()


def delete_token() -> bool:
    """Remove the token from the keyring; False if there was none there."""
    try:
        keyring.delete_password(SERVICE, USERNAME)
    except PasswordDeleteError:
        return False
    except KeyringError as error:
        raise KeyringUnavailableError(error) from None
    return True


def keyring_name() -> str:
    """The keyring backend in use, in words ("SecretService Keyring", "macOS Keyring")."""
    backend = keyring.get_keyring()
    return getattr(backend, "name", type(backend).__name__)


def _lookup() -> tuple[str | None, TokenSource | None]:
    env = os.environ.get("HF_TOKEN", "").strip()
    if env:
        return env, "environment"
    try:
        stored = keyring.get_password(SERVICE, USERNAME)
    except KeyringError:
        return None, None
    return (stored, "keyring") if stored else (None, None)
