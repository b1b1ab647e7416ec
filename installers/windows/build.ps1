# Build MoE Desk for Windows: dist\MoEDesk\ (MoEDesk.exe, moedesk-cli.exe) and a zip of it.
# UNTESTED on Windows (see docs/installing.md). Needs: Python 3.10+ (python.org, x64), Git for
# Windows, Visual Studio 2022 Build Tools with "Desktop development with C++", CMake 3.21+;
# for NVIDIA GPUs also the CUDA toolkit (its DLLs are bundled when they are on PATH).
#
#   powershell -ExecutionPolicy Bypass -File installers\windows\build.ps1
#   powershell -ExecutionPolicy Bypass -File installers\windows\build.ps1 -CMakeArgs "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89"
param(
    [string]$CMakeArgs = "",          # llama.cpp options: "" builds for the CPU
    [string]$Python = "python",       # the Python that creates the build venv
    [string]$Venv = ".venv-build"
)
$ErrorActionPreference = "Stop"
Set-Location (Resolve-Path "$PSScriptRoot\..\..")

function Invoke-Step([string]$What, [scriptblock]$Step) {
    Write-Host "== $What"
    & $Step
    if ($LASTEXITCODE) { throw "$What failed (exit code $LASTEXITCODE)" }
}

# the same install the README describes, into a build venv, with a copy of the app (not -e)
$env:CMAKE_ARGS = $CMakeArgs
Invoke-Step "engine and app" { & $Python installers\install.py --venv $Venv --no-dev --no-editable }
$py = Join-Path $Venv "Scripts\python.exe"
# Pillow lets PyInstaller turn the rendered PNG icon into moedesk.ico
Invoke-Step "PyInstaller" { & $py -m pip install --quiet "pyinstaller>=6.10" pillow }
Invoke-Step "bundle" { & $py -m PyInstaller --noconfirm --clean --distpath dist `
    --workpath build\pyinstaller installers\windows\moedesk.spec }
Invoke-Step "smoke test" { & dist\MoEDesk\moedesk-cli.exe info }
Compress-Archive -Path dist\MoEDesk -DestinationPath dist\MoEDesk-windows-x64.zip -Force
Write-Host "Built dist\MoEDesk\MoEDesk.exe and dist\MoEDesk-windows-x64.zip"
