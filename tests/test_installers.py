"""The Linux installer (installers/linux/install.sh), run for real into a temporary home.

The install reuses the CPU engine wheel that `python3 installers/install.py` (the README's first
step, and CI's) left in ~/.cache/moedesk/engine-wheels, and pip's cache beside it, so it takes
seconds. Without that cached wheel it would compile llama.cpp for 5-10 minutes: those tests are
skipped then, saying so. GPU detection is checked with stub nvidia-smi / rocminfo / vulkaninfo
scripts on PATH (no GPU can run here) in --dry-run, which prints the plan and builds nothing.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_SH = REPO / "installers" / "linux" / "install.sh"
REAL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")

sys.path.insert(0, str(REPO / "installers"))
import install as engine_build  # noqa: E402

CPU_WHEEL = engine_build.cached_wheel(engine_build.engine_cmake_args(""))
needs_cached_engine = pytest.mark.skipif(
    CPU_WHEEL is None or os.environ.get("XDG_CACHE_HOME", str(REAL_CACHE)) != str(REAL_CACHE),
    reason="no cached CPU engine build in ~/.cache/moedesk/engine-wheels: run "
    "`python3 installers/install.py` first (this test reuses its build rather than compiling "
    "llama.cpp for 5-10 minutes)")


def installer_env(home: Path, path: str | None = None) -> dict[str, str]:
    """The environment of a user whose home is ``home``, sharing the real build caches."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "MOEDESK_", "CMAKE_ARGS", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(REAL_CACHE))
    if path is not None:
        env["PATH"] = path
    return env


def run_installer(home: Path, *args: str, path: str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["sh", str(INSTALL_SH), *args], env=installer_env(home, path),
                          capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"installer failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def plan_value(output: str, key: str) -> str:
    """One line of the --dry-run plan ("  backend:  cuda: ...")."""
    for line in output.splitlines():
        if line.strip().startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {key!r} in the plan:\n{output}")


def stub(folder: Path, name: str, script: str) -> None:
    """An executable stand-in for an external command (there is no GPU or driver here)."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


# ---- GPU backend detection (--dry-run: the plan only) --------------------------------------

def test_this_machine_without_a_gpu_gets_the_cpu_build_that_ci_cached(tmp_path: Path) -> None:
    if any(shutil.which(t) for t in ("nvidia-smi", "rocminfo", "vulkaninfo")):
        pytest.skip("this machine has GPU tools: the CPU choice is checked on machines without")
    out = run_installer(tmp_path, "--dry-run").stdout
    assert plan_value(out, "backend").startswith("cpu:")
    # no GPU options, so the build key is installers/install.py's default one
    assert plan_value(out, "CMAKE_ARGS") == "-DLLAVA_BUILD=OFF"
    assert plan_value(out, "venv") == str(tmp_path / ".local/share/moedesk/venv")
    assert not (tmp_path / ".local").exists(), "a dry run must not write anything"


def test_nvidia_gpus_give_a_cuda_build_for_their_architectures(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "nvidia-smi", 'echo "NVIDIA GeForce RTX 3090, 8.6"\n'
                                'echo "NVIDIA H100 80GB HBM3, 9.0"')
    out = run_installer(tmp_path, "--dry-run", path=f"{bin_dir}:{os.environ['PATH']}").stdout
    assert plan_value(out, "backend").startswith("cuda: NVIDIA GPU found by nvidia-smi")
    assert plan_value(out, "CMAKE_ARGS") == \
        "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=86;90 -DLLAVA_BUILD=OFF"


def test_an_old_nvidia_driver_without_compute_cap_builds_for_all_architectures(
        tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    # drivers before 510 reject the compute_cap field and exit non-zero
    stub(bin_dir, "nvidia-smi", 'case "$*" in *compute_cap*) echo "Field compute_cap is not '
                                'valid" >&2; exit 2;; esac\necho "Tesla V100-SXM2-16GB"')
    out = run_installer(tmp_path, "--dry-run", path=f"{bin_dir}:{os.environ['PATH']}").stdout
    assert plan_value(out, "backend").startswith("cuda:")
    assert plan_value(out, "CMAKE_ARGS") == "-DGGML_CUDA=on -DLLAVA_BUILD=OFF"


def test_amd_gpus_give_a_hip_build_for_their_gfx_targets(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "rocminfo", "cat <<'EOF'\n*******\nAgent 1\n*******\n"
                              "  Name:                    AMD Ryzen 9 7950X\n*******\nAgent 2\n"
                              "*******\n  Name:                    gfx1100\n"
                              "  Marketing Name:          Radeon RX 7900 XTX\nEOF")
    out = run_installer(tmp_path, "--dry-run", path=f"{bin_dir}:{os.environ['PATH']}").stdout
    assert plan_value(out, "backend") == "hip: AMD GPU found by rocminfo: gfx1100"
    assert plan_value(out, "CMAKE_ARGS") == "-DGGML_HIP=on -DGPU_TARGETS=gfx1100 -DLLAVA_BUILD=OFF"
    assert "ROCm HIP compiler" in plan_value(out, "missing")  # no hipconfig here


@pytest.mark.parametrize(("device_type", "backend"), [
    ("PHYSICAL_DEVICE_TYPE_DISCRETE_GPU", "vulkan"),
    ("PHYSICAL_DEVICE_TYPE_CPU", "cpu"),  # llvmpipe renders on the CPU: no GPU to build for
])
def test_vulkan_build_only_for_a_real_vulkan_gpu(tmp_path: Path, device_type: str,
                                                 backend: str) -> None:
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "vulkaninfo", f"echo 'GPU0:'\necho '  deviceType = {device_type}'\n"
                                "echo '  deviceName = Some Device'")
    out = run_installer(tmp_path, "--dry-run", path=f"{bin_dir}:{os.environ['PATH']}").stdout
    assert plan_value(out, "backend").split(":")[0] == backend


def test_missing_build_tools_are_named_with_the_command_that_installs_them(
        tmp_path: Path) -> None:
    # a PATH holding only python: no compiler, no cmake, no git; and an empty build cache
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = installer_env(tmp_path, path=str(bin_dir))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    done = subprocess.run(["/bin/sh", str(INSTALL_SH)], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "a C compiler" in done.stderr and "CMake 3.21 or newer" in done.stderr
    assert "sudo apt install build-essential cmake git" in done.stderr
    assert "sudo dnf install gcc gcc-c++ cmake git" in done.stderr
    assert not (tmp_path / ".local/share/moedesk/venv").exists()


# ---- a real install into a temporary home ---------------------------------------------------

@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's home with MoE Desk installed, by running the installer twice (idempotent)."""
    if CPU_WHEEL is None:
        pytest.skip("no cached CPU engine build: run `python3 installers/install.py` first")
    home = tmp_path_factory.mktemp("home")
    run_installer(home)
    second = run_installer(home)
    assert "using cached engine build" in second.stdout
    return home


@needs_cached_engine
def test_the_installed_venv_runs_the_app_and_the_engine(home: Path) -> None:
    python = home / ".local/share/moedesk/venv/bin/python"
    done = subprocess.run([str(python), "-c", "import app, llama_cpp; print(app.__file__)"],
                          cwd=home, capture_output=True, text=True, check=True)
    # a copy in the venv, not a link to this checkout: the checkout can go away
    assert done.stdout.strip().startswith(str(python.parent.parent))
    cli = subprocess.run([str(home / ".local/bin/moedesk-cli"), "--help"], cwd=home,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "usage" in cli.stdout.lower()


@needs_cached_engine
def test_the_menu_entry_is_valid_and_starts_the_launcher(home: Path) -> None:
    desktop = home / ".local/share/applications/moedesk.desktop"
    if shutil.which("desktop-file-validate"):
        done = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(desktop)
    launcher = home / ".local/bin/moedesk"
    assert entry["Desktop Entry"]["Exec"] == str(launcher)
    assert entry["Desktop Entry"]["Icon"] == "moedesk"
    assert os.access(launcher, os.X_OK)
    assert str(home / ".local/share/moedesk/venv/bin/moedesk") in launcher.read_text()
    icon = home / ".local/share/icons/hicolor/scalable/apps/moedesk.svg"
    assert icon.read_text().lstrip().startswith("<?xml") and "<svg" in icon.read_text()


def _free_display() -> int:
    return next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                and not Path(f"/tmp/.X{n}-lock").exists())


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A virtual X screen (Debian's xvfb package); its DISPLAY value."""
    if shutil.which("Xvfb") is None or shutil.which("xwininfo") is None:
        pytest.skip("Xvfb or xwininfo is missing (apt-get install -y xvfb x11-utils)")
    display = f":{_free_display()}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
    deadline = time.monotonic() + 20
    while not socket.exists() and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not socket.exists():
        server.kill()
        pytest.fail(f"Xvfb did not start on {display}")
    yield display
    server.terminate()
    server.wait(10)


GRAB = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(sys.argv)
image = app.primaryScreen().grabWindow(0).toImage()
image.save(sys.argv[1])
# Xvfb's empty screen is black: how much of it a window covers, and in how many colours
step = 8
pixels = [image.pixel(x, y) for x in range(0, image.width(), step)
          for y in range(0, image.height(), step)]
painted = [p for p in pixels if p & 0xFFFFFF]
print(len(painted) / len(pixels), len(set(painted)))
"""


@needs_cached_engine
def test_the_app_starts_from_its_menu_entry_under_xvfb(home: Path, xvfb: str,
                                                        tmp_path: Path) -> None:
    if not (REPO / "app" / "ui" / "main.py").exists():
        pytest.skip("the desktop app's entry point (app/ui/main.py) is not written yet")
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(home / ".local/share/applications/moedesk.desktop")
    env = installer_env(home)
    env.update(DISPLAY=xvfb, QT_QPA_PLATFORM="xcb", MOEDESK_HOME=str(tmp_path / "moedesk"))
    app = subprocess.Popen([entry["Desktop Entry"]["Exec"]], env=env, cwd=home,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30  # a bound on waiting, not a speed assertion
        windows = ""
        while "MoE Desk" not in windows and app.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            windows = subprocess.run(["xwininfo", "-root", "-tree"], env=env, text=True,
                                     capture_output=True).stdout
        assert app.poll() is None, f"the app exited ({app.returncode}):\n{app.communicate()[0]}"
        assert "MoE Desk" in windows, "no window titled MoE Desk appeared"
        time.sleep(2)  # let it paint
        grab = subprocess.run([str(home / ".local/share/moedesk/venv/bin/python"), "-c", GRAB,
                               str(tmp_path / "screen.png")], env=env, capture_output=True,
                              text=True, check=True)
        covered, colours = grab.stdout.split()
        # a main window covers a good part of a 1280x800 screen, with text and frames in it
        assert float(covered) > 0.1 and int(colours) >= 3, f"blank screen: {grab.stdout}"
        if os.environ.get("MOEDESK_SCREENSHOT_DIR"):  # to look at it: the test can't see
            shutil.copyfile(tmp_path / "screen.png",
                            Path(os.environ["MOEDESK_SCREENSHOT_DIR"]) / "linux-install-xvfb.png")
    finally:
        app.terminate()
        try:
            app.wait(15)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()


# Last in this module: it removes the install the tests above share (pytest runs a module's
# tests in the order they are written).
@needs_cached_engine
def test_uninstall_removes_what_it_installed_and_keeps_the_users_data(home: Path) -> None:
    conversations = home / ".local/share/moedesk/conversations.sqlite"
    conversations.write_text("the user's")
    uninstaller = home / ".local/share/moedesk/uninstall.sh"
    done = subprocess.run([str(uninstaller)], env=installer_env(home), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    for gone in (".local/share/moedesk/venv", ".local/bin/moedesk", ".local/bin/moedesk-cli",
                 ".local/share/applications/moedesk.desktop",
                 ".local/share/icons/hicolor/scalable/apps/moedesk.svg",
                 ".local/share/moedesk/uninstall.sh"):
        assert not (home / gone).exists(), gone
    assert conversations.read_text() == "the user's"
    assert str(home / ".local/share/moedesk") in done.stdout


# ---- the PyInstaller bundles' entry point (the bundles themselves are built by hand) --------

def run_entry(code: str) -> subprocess.CompletedProcess[str]:
    entry_dir = REPO / "installers" / "pyinstaller"
    return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(entry_dir)!r})"
                           f"\nimport entry\n{code}"], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("prefix", [["-m", "app.engine"], ["--engine"]])
def test_a_bundle_runs_the_engine_when_started_as_python_dash_m(prefix: list[str]) -> None:
    # app/engine/process.py starts [sys.executable, "-m", "app.engine", ...]: in a bundle,
    # sys.executable is the bundle's program, which must then be the engine
    done = run_entry(f"raise SystemExit(entry.main({[*prefix, '--help']!r}))")
    assert done.returncode == 0, done.stderr
    assert "usage: python -m app.engine" in done.stdout


def test_a_bundle_program_named_cli_is_the_cli() -> None:
    done = run_entry("sys.executable = '/Applications/MoE Desk.app/Contents/MacOS/moedesk-cli'\n"
                     "raise SystemExit(entry.main(['--help']))")
    assert done.returncode == 0, done.stderr
    assert "usage: moedesk-cli" in done.stdout


def test_the_engine_command_from_source_and_from_each_bundle() -> None:
    from app.engine.process import engine_command

    python = "/usr/bin/python3"
    assert engine_command(python, frozen=False, windows=False) == ([python, "-m", "app.engine"], True)
    # a Linux or macOS bundle answers -m app.engine itself (the test above)
    assert engine_command("/opt/MoEDesk/MoEDesk", frozen=True, windows=False) == (
        ["/opt/MoEDesk/MoEDesk", "-m", "app.engine"], False)
    # Windows: the windowed MoEDesk.exe has no dependable stdin/stdout; the console program
    # beside it runs the engine (its --engine prefix is the test above's)
    command, needs_path = engine_command(r"C:\Program Files\MoEDesk\MoEDesk.exe", frozen=True, windows=True)
    assert command == [r"C:\Program Files\MoEDesk\moedesk-cli.exe", "--engine"] and not needs_path
