#!/bin/sh
# Install MoE Desk for this Linux user (see docs/installing.md, or run with --help).
# This wrapper only finds a Python 3.10+; installers/linux/install_linux.py does the rest.
set -eu
case "$0" in */*) here=${0%/*} ;; *) here=. ;; esac  # no dirname: PATH may be bare
for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10; do
  if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    exec "$candidate" "$here/install_linux.py" "$@"
  fi
done
found=$(python3 --version 2>&1 || echo "no python3")
echo "MoE Desk needs Python 3.10 or newer (found: $found). Install it with:" >&2
echo "  sudo apt install python3 python3-venv     (Debian, Ubuntu)" >&2
echo "  sudo dnf install python3                  (Fedora, RHEL)" >&2
echo "or point PYTHON at one: PYTHON=/path/to/python3.11 $0" >&2
exit 1
