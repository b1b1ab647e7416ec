"""The Hub token: kept in the keyring (an in-memory backend: no system keyring runs here), never in a
file or a log; HF_TOKEN wins; with no keyring at all, a clear error and no plaintext fallback."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from app.cli import main as cli_main
from app.hub import token as hub_token
from app.hub.download import download_quant
from app.hub.errors import GatedRepoError
from app.hub.repo import list_gguf_quants
from tests import hub_server
from tests.hub_server import LocalHub, MemoryKeyring, repo_of_files

local_hub = hub_server.local_hub
memory_keyring = hub_server.memory_keyring

SECRET = "hf_SuperSecretToken0123456789"
REPO = "meta/Gated-MoE-GGUF"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # where huggingface_hub would save one
    return tmp_path


def login(monkeypatch: pytest.MonkeyPatch, typed: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed + "\n"))
    return cli_main(["login", "--stdin"])


def files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_login_keeps_the_token_in_the_keyring_only_and_it_opens_a_gated_repo(
    home: Path, memory_keyring: MemoryKeyring, local_hub: LocalHub, tiny_moe_gguf: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's included
    local_hub.add(REPO, repo_of_files({"m-Q4_0.gguf": tiny_moe_gguf}, gated=True, tokens=frozenset({SECRET})))
    (quant,) = list_gguf_quants(REPO, endpoint=local_hub.url)
    with pytest.raises(GatedRepoError):
        download_quant(REPO, quant, home / "models", token=hub_token.get_token(), endpoint=local_hub.url)

    assert login(monkeypatch, SECRET) == 0

    assert memory_keyring.passwords == {(hub_token.SERVICE, hub_token.USERNAME): SECRET}
    assert (hub_token.get_token(), hub_token.token_source()) == (SECRET, "keyring")
    token = hub_token.get_token()
    (path,) = download_quant(REPO, quant, home / "models", token=token, endpoint=local_hub.url)
    assert path.read_bytes() == tiny_moe_gguf.read_bytes()
    out, err = capsys.readouterr()
    assert "saved in the system keyring" in out
    assert "HTTP Request" in caplog.text  # the log was captured (httpx's, at DEBUG)...
    assert SECRET not in out + err + caplog.text  # ...and the token is not in it
    assert files_containing(home, SECRET) == []


def test_hf_token_in_the_environment_wins_over_the_keyring(
    home: Path, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub_token.save_token(SECRET)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")

    assert (hub_token.get_token(), hub_token.token_source()) == ("hf_from_env", "environment")
    assert cli_main(["logout"]) == 0
    assert "HF_TOKEN is still set" in capsys.readouterr().out
    assert memory_keyring.passwords == {}
    monkeypatch.delenv("HF_TOKEN")
    assert hub_token.get_token() is None
    assert cli_main(["logout"]) == 0
    assert "No token was saved" in capsys.readouterr().out


def test_a_blank_token_is_refused(home: Path, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert login(monkeypatch, "hf_two words") == 1
    assert "not a Hub access token" in capsys.readouterr().err
    assert memory_keyring.passwords == {}


def test_without_a_keyring_login_says_so_and_writes_no_file(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # what a headless Linux box without a Secret Service has
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        assert login(monkeypatch, SECRET) == 1
        assert hub_token.get_token() is None  # reading does not fail: public repos still work
    finally:
        keyring.set_keyring(previous)

    err = capsys.readouterr().err
    assert "keyring cannot be used" in err and "HF_TOKEN" in err and "never in a plain file" in err
    assert SECRET not in err + caplog.text
    assert files_containing(home, SECRET) == []


def test_the_download_command_uses_hf_token_and_hf_endpoint(
    home: Path, local_hub: LocalHub, tiny_moe_gguf: Path
) -> None:
    local_hub.add(REPO, repo_of_files({"m-Q4_0.gguf": tiny_moe_gguf}, gated=True, tokens=frozenset({SECRET})))
    env = {**os.environ, "HF_ENDPOINT": local_hub.url, "HF_TOKEN": SECRET}
    command = [sys.executable, "-m", "app.cli", "download", REPO, "--quant", "Q4_0", "--dir", str(home / "m")]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).read_bytes() == tiny_moe_gguf.read_bytes()
    assert SECRET not in done.stdout + done.stderr
    assert hub_token.hub_endpoint() == local_hub.url
