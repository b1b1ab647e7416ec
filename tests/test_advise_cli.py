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
    assert "Engine placement: context 2,048, GPU layers 0" in done.stdout


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


def test_download_a_quant_from_the_command_line(local_hub: LocalHub, split_moe_gguf: list[Path],
                                                tmp_path: Path) -> None:
    files: dict[str, bytes | hub_server.LargeFile] = {
        f"Q4_0/Tiny-Q4_0-{i:05d}-of-00003.gguf": shard.read_bytes()
        for i, shard in enumerate(split_moe_gguf, start=1)
    }
    local_hub.add("moedesk/Tiny-GGUF", HubRepo(files=files))
    command = [sys.executable, "-m", "app.cli", "download", "moedesk/Tiny-GGUF", "--dir", str(tmp_path)]

    wrong = subprocess.run([*command, "--quant", "Q9_K"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "It has: Q4_0" in wrong.stderr

    done = subprocess.run([*command, "--quant", "q4_0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first = Path(done.stdout.strip())
    assert first.name == "Tiny-Q4_0-00001-of-00003.gguf" and first.is_file()
    for shard in split_moe_gguf:  # every shard arrived whole
        assert (first.parent / shard.name.replace("tiny-moe", "Tiny-Q4_0")).read_bytes() == shard.read_bytes()
