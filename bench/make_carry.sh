#!/usr/bin/env bash
# Make .carry/: what the accelerator machine (no network) needs beside this working tree to run
# bench/gpu_session.sh: the llama-cpp-python sdist, trimmed under the 64 MiB a call may carry
# (its git history and its vendored llama.cpp's models, docs, tests, examples and tools/ui
# are not needed to build),
# and Python 3.12 wheels of the pure-Python packages that machine's image lacks.
# Run here, once per fresh checkout (about 10 s); .carry/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(python3 -c "import re; print(re.search(r'LLAMA_CPP_PYTHON_VERSION = \"(.+?)\"', \
open('installers/install.py').read()).group(1))")
CARRY=.carry
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$CARRY" && mkdir -p "$CARRY"

python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP"
tar xzf "$TMP"/llama_cpp_python-"$VERSION".tar.gz -C "$CARRY"
vendor="$CARRY/llama_cpp_python-$VERSION/vendor/llama.cpp"
rm -rf "$vendor"/{models,docs,media,benches,tests,examples,gguf-py,conversion,tools/ui}
# the sdist carries its git history (39 MB), and a gitlink in llama.cpp that then points nowhere
rm -rf "$CARRY/llama_cpp_python-$VERSION/.git" "$vendor/.git"

python3 -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --platform any \
    -d "$CARRY" gguf diskcache pytest pluggy iniconfig pytest-timeout platformdirs packaging \
    keyring jaraco.classes jaraco.functools jaraco.context more-itertools \
    backports.tarfile  # (jaraco.context needs it below Python 3.12)
du -sh "$CARRY"
