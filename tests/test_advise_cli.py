"""`moedesk-cli advise`: the plan for a local file, and for every quant of a Hub repo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import hub_server
from tests.hub_server import HubRepo, LocalHub

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it


def advise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "advise", *args],
                          capture_output=True, text=True, timeout=120)


def test_advise_a_local_model(tiny_moe_gguf: Path) -> None:
    done = advise(str(tiny_moe_gguf), "--ctx", "2048")
    assert done.returncode == 0, done.stderr
    assert "qwen3moe, 4 layers, 8 experts (2 active)" in done.stdout
    assert "Verdict: fits in ram" in done.stdout  # no GPU on this machine
    assert "Engine placement: context 2048" in done.stdout


def test_advise_every_quant_of_a_hub_repo_from_headers(local_hub: LocalHub, tiny_moe_gguf: Path,
                                                       split_moe_gguf: list[Path]) -> None:
    tiny = tiny_moe_gguf.read_bytes()
    files: dict[str, bytes | hub_server.LargeFile] = {"Tiny-Q4_0.gguf": tiny,
                                                     "Tiny-Q8_0.gguf": tiny + b"\0" * 4096}
    for i, shard in enumerate(split_moe_gguf, start=1):
        if i != 2:  # a quant whose second shard is missing
            files[f"Tiny-IQ2_XS-{i:05d}-of-00003.gguf"] = shard.read_bytes()
    local_hub.add("moedesk/Tiny-GGUF", HubRepo(files=files))
    done = advise("moedesk/Tiny-GGUF")  # HF_ENDPOINT points at the local hub
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {"Q4_0", "Q8_0", "IQ2_XS"}
    assert "fits in ram" in rows["Q4_0"] and "fits in ram" in rows["Q8_0"]
    assert "incomplete: shards 2 missing" in rows["IQ2_XS"]
