#!/usr/bin/env python3
"""Install MoE Desk for this Linux user: a virtual environment with the engine built for the
GPU found, the app, a menu entry with its icon, launchers and an uninstall script.

    installers/linux/install.sh               # detect the GPU, build, install
    installers/linux/install.sh --dry-run     # print the plan only
    installers/linux/install.sh --backend vulkan --venv ~/apps/moedesk-venv

Defaults follow the XDG base directories: the venv in ~/.local/share/moedesk/venv, launchers
in ~/.local/bin, the menu entry in ~/.local/share/applications, the icon in the hicolor theme.
HOME and XDG_DATA_HOME move them all; options move each. Running it again updates in place.
The engine build itself is installers/install.py's (cached per version, patches and options).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from backend import BACKENDS, Backend, Tool, choose_backend
from desktop import Layout, install_desktop_files

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "installers"))
import install as engine_build  # noqa: E402  (installers/install.py: the venv and engine build)

MIN_PYTHON = (3, 10)
MIN_CMAKE = (3, 21)
# the other engineer's icon first; ours until theirs lands
ICON_SOURCES = (REPO / "resources" / "moedesk.svg", REPO / "resources" / "icons" / "moedesk.svg")

VENV_TOOL = Tool("Python's venv module (ensurepip)", "python3-venv", "python3")
CC = Tool("a C compiler", "build-essential", "gcc")
CXX = Tool("a C++ compiler", "build-essential", "gcc-c++")
CMAKE = Tool(f"CMake {'.'.join(map(str, MIN_CMAKE))} or newer", "cmake", "cmake")
PATCHER = Tool("git (to apply the engine's patches)", "git", "git")


@dataclass(frozen=True)
class Plan:
    """Everything the install will do, printed by --dry-run before anything is done."""

    backend: Backend
    cmake_args: str  # the final options, as installers/install.py will build with them
    cached_wheel: Path | None
    layout: Layout
    icon_source: Path | None
    missing: tuple[Tool, ...]


def default_layout(args: argparse.Namespace) -> Layout:
    home = Path.home()  # honours HOME, which is how tests install into a temporary home
    data_home = Path(args.data_home or os.environ.get("XDG_DATA_HOME") or home / ".local/share")
    data_dir = data_home / "moedesk"
    return Layout(
        venv=Path(args.venv).expanduser() if args.venv else data_dir / "venv",
        data_dir=data_dir,
        bin_dir=Path(args.bin_dir).expanduser() if args.bin_dir else home / ".local" / "bin",
        applications_dir=data_home / "applications",
        icon_theme_dir=data_home / "icons" / "hicolor",
    )


def cmake_version() -> tuple[int, ...] | None:
    try:
        text = subprocess.run(["cmake", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    found = re.search(r"version (\d+)\.(\d+)", text)
    return tuple(int(x) for x in found.groups()) if found else None


def missing_tools(backend: Backend, building: bool) -> tuple[Tool, ...]:
    """The prerequisites this machine lacks; compilers only matter when the engine is built
    (not when a cached build for the same options exists)."""
    missing: list[Tool] = []
    if importlib.util.find_spec("ensurepip") is None:  # Debian splits it into python3-venv
        missing.append(VENV_TOOL)
    if building:
        if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
            missing.append(CC)
        if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
            missing.append(CXX)
        version = cmake_version() if shutil.which("cmake") else None
        if version is None or version < MIN_CMAKE:
            missing.append(CMAKE)
        if not (shutil.which("git") or shutil.which("patch")):
            missing.append(PATCHER)
        missing.extend(backend.missing)
    return tuple(dict.fromkeys(missing))  # build-essential once, in order


def how_to_install(missing: tuple[Tool, ...]) -> str:
    """The missing prerequisites and the command that installs them with this distribution's
    package manager (both common ones when neither is found)."""
    lines = ["MoE Desk cannot be installed yet; this machine lacks:"]
    lines += [f"  - {t.what}" + (f" ({t.note})" if t.note else "") for t in missing]
    apt = " ".join(dict.fromkeys(p for t in missing for p in t.apt.split()))
    dnf = " ".join(dict.fromkeys(p for t in missing for p in t.dnf.split()))
    managers = [m for m in ("apt-get", "dnf") if shutil.which(m)] or ["apt-get", "dnf"]
    lines.append("Install them with:")
    if "apt-get" in managers:
        lines.append(f"  sudo apt install {apt}        (Debian, Ubuntu)")
    if "dnf" in managers:
        lines.append(f"  sudo dnf install {dnf}        (Fedora, RHEL)")
    lines.append("then run this installer again.")
    return "\n".join(lines)


def make_plan(args: argparse.Namespace) -> Plan:
    if os.environ.get("CMAKE_ARGS"):  # the README's way to choose a build: honoured as given
        backend = Backend("custom", os.environ["CMAKE_ARGS"], "CMAKE_ARGS from the environment")
    else:
        backend = choose_backend(args.backend)
        if args.cmake_args:
            backend = Backend(backend.name, f"{backend.cmake_args} {args.cmake_args}".strip(),
                              backend.reason, backend.build_env, backend.missing)
    cmake_args = engine_build.engine_cmake_args(backend.cmake_args)
    cached = engine_build.cached_wheel(cmake_args)
    icon = next((p for p in ICON_SOURCES if p.is_file()), None)
    return Plan(backend, cmake_args, cached, default_layout(args), icon,
                missing_tools(backend, building=cached is None))


def describe(plan: Plan) -> str:
    layout = plan.layout
    engine = (f"cached build {plan.cached_wheel}" if plan.cached_wheel
              else "built from source (4-10 minutes on 2 cores, longer for GPU backends)")
    rows = [
        ("backend", f"{plan.backend.name}: {plan.backend.reason}"),
        ("CMAKE_ARGS", plan.cmake_args),
        ("engine", engine),
        ("venv", layout.venv),
        ("launchers", f"{layout.launcher}, {layout.cli_launcher}"),
        ("desktop entry", layout.desktop_file),
        ("icon", f"{layout.icon} (from {plan.icon_source})"),
        ("uninstall", layout.uninstaller),
    ]
    rows += [("build env", f"{k}={v}") for k, v in plan.backend.build_env.items()]
    rows += [("missing", t.what) for t in plan.missing]
    return "MoE Desk install plan\n" + "\n".join(f"  {k + ':':<15}{v}" for k, v in rows)


def install(plan: Plan, args: argparse.Namespace) -> None:
    layout = plan.layout
    if layout.venv.exists() and any(layout.venv.iterdir()) \
            and not (layout.venv / "pyvenv.cfg").exists():
        sys.exit(f"{layout.venv} exists and is not a virtual environment: choose another "
                 "folder with --venv, or empty it")
    command = [sys.executable, str(REPO / "installers" / "install.py"), "--venv", str(layout.venv),
               "--no-dev", "--no-editable"]
    if args.sdist:
        command += ["--sdist", str(args.sdist)]
    if args.offline:
        command.append("--offline")
    env = {**os.environ, **plan.backend.build_env, "CMAKE_ARGS": plan.backend.cmake_args}
    # setuptools builds in the checkout's build/lib and never prunes it: a module deleted from
    # the checkout would still be packaged from there
    shutil.rmtree(REPO / "build" / "lib", ignore_errors=True)
    subprocess.run(command, check=True, env=env)
    python = engine_build.venv_python(layout.venv)
    # the app and the engine it drives must both import from the installed venv
    # (run from the venv's folder: from the checkout, `import app` would find the checkout's)
    subprocess.run([str(python), "-c", "import app, llama_cpp"], check=True, cwd=layout.venv)
    assert plan.icon_source is not None
    install_desktop_files(layout, plan.icon_source, user_data_dirs())


def user_data_dirs() -> list[Path]:
    """Where the app keeps what the user made (platformdirs' XDG folders, see app/paths.py)."""
    home = Path.home()
    return [Path(os.environ.get(var) or home / default) / "moedesk"
            for var, default in (("XDG_DATA_HOME", ".local/share"), ("XDG_CONFIG_HOME", ".config"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="engine build: auto (default) picks CUDA, HIP, Vulkan or CPU by "
                        "the GPU found")
    parser.add_argument("--cmake-args", default="", help="more llama.cpp CMake options, "
                        "e.g. -DGGML_CUDA_FA_ALL_QUANTS=on")
    parser.add_argument("--venv", help="virtual environment (default: "
                        "$XDG_DATA_HOME/moedesk/venv, i.e. ~/.local/share/moedesk/venv)")
    parser.add_argument("--bin-dir", help="where the moedesk and moedesk-cli launchers go "
                        "(default: ~/.local/bin)")
    parser.add_argument("--data-home", help="instead of $XDG_DATA_HOME or ~/.local/share: "
                        "the root of moedesk/, applications/ and icons/")
    parser.add_argument("--sdist", type=Path, help="build the engine from this llama-cpp-python "
                        "source archive instead of downloading it")
    parser.add_argument("--offline", action="store_true", help="no package index (needs --sdist "
                        "and every dependency in pip's find-links)")
    args = parser.parse_args(argv)

    if sys.version_info < MIN_PYTHON:
        sys.exit(f"MoE Desk needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; this is "
                 f"{sys.version.split()[0]}. Debian/Ubuntu: sudo apt install python3; "
                 "Fedora: sudo dnf install python3")
    plan = make_plan(args)
    print(describe(plan), flush=True)
    if plan.icon_source is None:
        sys.exit(f"no icon found at {' or '.join(map(str, ICON_SOURCES))}: is this a full checkout?")
    if args.dry_run:
        return 0
    if plan.missing:
        sys.exit(how_to_install(plan.missing))
    try:
        install(plan, args)
    except subprocess.CalledProcessError as err:
        sys.exit(f"install step failed (exit status {err.returncode}): {' '.join(err.cmd)}\n"
                 "The messages above say why; fix that and run the installer again.")
    except RuntimeError as err:
        sys.exit(str(err))
    layout = plan.layout
    print(f"\nMoE Desk is installed. Start it from your applications menu, or run {layout.launcher}")
    if str(layout.bin_dir) not in os.environ.get("PATH", "").split(os.pathsep):
        print(f"(add {layout.bin_dir} to PATH to run `moedesk` and `moedesk-cli` by name)")
    print(f"To remove it: {layout.uninstaller}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
