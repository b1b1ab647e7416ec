#!/bin/sh
# Build "MoE Desk.app" for macOS (Apple Silicon, Metal) and a .dmg of it, in dist/.
# UNTESTED on macOS (see docs/installing.md). Needs: Python 3.10+ (python.org or Homebrew),
# Xcode command line tools (xcode-select --install), CMake 3.21+ (brew install cmake).
#
#   installers/macos/build.sh                       # Metal build
#   CMAKE_ARGS="-DGGML_METAL=off" installers/macos/build.sh   # CPU only (Intel Macs)
#   SIGN_IDENTITY="Developer ID Application: ..." installers/macos/build.sh   # to distribute
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-build}
export CMAKE_ARGS="${CMAKE_ARGS--DGGML_METAL=on}"

# the same install the README describes, into a build venv, with a copy of the app (not -e)
"$PYTHON" installers/install.py --venv "$VENV" --no-dev --no-editable
# Pillow lets PyInstaller turn the rendered PNG icon into moedesk.icns
"$VENV/bin/python" -m pip install --quiet "pyinstaller>=6.10" pillow
"$VENV/bin/python" -m PyInstaller --noconfirm --clean --distpath dist \
    --workpath build/pyinstaller installers/macos/moedesk.spec
app="dist/MoE Desk.app"
"$app/Contents/MacOS/moedesk-cli" info   # smoke test: the bundled engine loads
# PyInstaller signs ad hoc, enough to run on this Mac; other Macs need a Developer ID
# signature (hardened runtime) and notarization
if [ -n "${SIGN_IDENTITY:-}" ]; then
  codesign --force --deep --options runtime --timestamp --sign "$SIGN_IDENTITY" "$app"
fi
hdiutil create -volname "MoE Desk" -srcfolder "$app" -ov -format UDZO dist/MoEDesk-macos.dmg
echo "Built $app and dist/MoEDesk-macos.dmg"
