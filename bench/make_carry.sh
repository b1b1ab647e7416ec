#!/usr/bin/env bash
# Make .carry/: what the accelerator machine (no network) needs beside this working tree to run
# bench/gpu_session.sh: the llama-cpp-python sdist, trimmed under the 64 MiB a call may carry,
# and Python 3.12 wheels of the pure-Python packages that machine's image lacks.
# Run here, once per fresh checkout (about 10 s); .carry/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.carry
rm -rf "$CARRY" && mkdir -p "$CARRY"

# the sdist as installers/install.py fetches and unpacks it, less what its build never reads
python3 - "$CARRY" <<'PY'
import shutil, sys, tempfile
from pathlib import Path
sys.path.insert(0, "installers")
import install
with tempfile.TemporaryDirectory() as tmp:
    tree = install.unpack(install.fetch_sdist(Path(sys.executable), Path(tmp)), Path(sys.argv[1]))
vendor = tree / "vendor" / "llama.cpp"
# the sdist carries its git history (39 MB), and a gitlink in llama.cpp that then points
# nowhere (git apply of the patches fails under it)
for unused in [*(vendor / d for d in install.UNUSED_VENDOR_DIRS), tree / ".git", vendor / ".git"]:
    shutil.rmtree(unused, ignore_errors=True) if unused.is_dir() else unused.unlink(missing_ok=True)
PY

python3 -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --platform any \
    -d "$CARRY" gguf diskcache pytest pluggy iniconfig pytest-timeout platformdirs packaging \
    keyring jaraco.classes jaraco.functools jaraco.context more-itertools \
    backports.tarfile  # (jaraco.context needs it below Python 3.12)
du -sh "$CARRY"
