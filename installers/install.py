#!/usr/bin/env python3
"""Install MoE Desk into a virtual environment, with llama.cpp built from source and patched.

    python3 installers/install.py            # .venv with the app, its dev tools and a CPU engine
    CMAKE_ARGS="-DGGML_CUDA=on" python3 installers/install.py   # NVIDIA GPUs (see README)

Steps: create the venv; fetch the llama-cpp-python source release the app pins; apply the
patches in app/engine/patches/ to its vendored llama.cpp; build a wheel (cached per version,
patch set and CMAKE_ARGS, so a re-run is quick); install it and then the app itself.
Standard library only: this runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # keep equal to the pin in pyproject.toml
REPO = Path(__file__).resolve().parent.parent
PATCHES = sorted((REPO / "app" / "engine" / "patches").glob("*.patch"))
# Parts of the sdist a build never reads; dropping them keeps a carried copy small.
UNUSED_VENDOR_DIRS = ("models", "docs", "media", "benches", "tests", "examples", "gguf-py",
                      "conversion", "tools/ui")


def run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "moedesk" / "engine-wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_key(cmake_args: str) -> str:
    digest = hashlib.sha256()
    digest.update(LLAMA_CPP_PYTHON_VERSION.encode())
    digest.update(cmake_args.encode())
    for patch in PATCHES:
        digest.update(patch.read_bytes())
    return digest.hexdigest()[:16]


def fetch_sdist(python: Path, into: Path) -> Path:
    run([str(python), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--dest", str(into), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"])
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        sys.exit("pip downloaded no llama-cpp-python source archive; check your network or index")
    return found[0]


def unpack(sdist: Path, into: Path) -> Path:
    """The source tree of ``sdist`` (a .tar.gz or an already unpacked folder) under ``into``."""
    if sdist.is_dir():
        tree = into / sdist.name
        shutil.copytree(sdist, tree, symlinks=True)
        return tree
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data") if sys.version_info >= (3, 12) else archive.extractall(into)
    trees = [p for p in into.iterdir() if p.is_dir() and p.name.startswith("llama_cpp_python")]
    if len(trees) != 1:
        sys.exit(f"unexpected layout in {sdist}")
    return trees[0]


def apply_patches(tree: Path) -> None:
    llama_cpp = tree / "vendor" / "llama.cpp"
    for patch in PATCHES:
        # git apply works on plain folders too and fails cleanly if a hunk does not fit
        if shutil.which("git"):
            run(["git", "apply", "--verbose", str(patch)], cwd=llama_cpp)
        else:
            run(["patch", "-p1", "--forward", "-i", str(patch)], cwd=llama_cpp)


def engine_cmake_args(requested: str) -> str:
    """The CMake options the engine is built with, from the user's ``CMAKE_ARGS``."""
    if "LLAVA_BUILD" not in requested:
        requested = (requested + " -DLLAVA_BUILD=OFF").strip()  # multimodal: not used here
    return requested


def cached_wheel(cmake_args: str) -> Path | None:
    """The engine wheel already built for these options, if any."""
    wheels = sorted((cache_dir() / build_key(cmake_args)).glob("llama_cpp_python-*.whl"))
    return wheels[0] if wheels else None


def build_wheel(python: Path, sdist: Path | None, cmake_args: str, offline: bool) -> Path:
    cached = cache_dir() / build_key(cmake_args)
    wheel = cached_wheel(cmake_args)
    if wheel is not None:
        print(f"using cached engine build {wheel}")
        return wheel
    with tempfile.TemporaryDirectory(prefix="moedesk-build-") as tmp:
        work = Path(tmp)
        source = sdist or fetch_sdist(python, work / "download")
        tree = unpack(source, work / "src")
        apply_patches(tree)
        env = dict(os.environ)
        env["CMAKE_ARGS"] = cmake_args
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        out = work / "wheel"
        isolation = ["--no-build-isolation"] if offline else []
        run([str(python), "-m", "pip", "wheel", "--no-deps", *isolation, "--wheel-dir", str(out),
             str(tree)], env=env)
        built = sorted(out.glob("llama_cpp_python-*.whl"))
        if not built:
            sys.exit("the llama-cpp-python build produced no wheel")
        cached.mkdir(parents=True, exist_ok=True)
        target = cached / built[0].name
        shutil.copy2(built[0], target)
        return target


def venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(REPO / ".venv"),
                        help="virtual environment to create or update; '-' installs into the "
                        "running Python instead (default: .venv in the repo)")
    parser.add_argument("--sdist", type=Path, help="a llama-cpp-python source archive or "
                        "unpacked folder to build from, instead of downloading it")
    parser.add_argument("--no-dev", action="store_true", help="skip the test and lint tools")
    parser.add_argument("--offline", action="store_true",
                        help="no package index: build with what is installed (needs --sdist, "
                        "scikit-build-core and the engine's dependencies in place)")
    parser.add_argument("--engine-only", action="store_true",
                        help="build and install the patched engine only, not the app")
    parser.add_argument("--no-editable", action="store_true",
                        help="install a copy of the app, not a link to this checkout (for "
                        "users: the checkout can then be moved or deleted)")
    args = parser.parse_args(argv)

    if args.venv == "-":
        python = Path(sys.executable)
    else:
        env_dir = Path(args.venv)
        if not venv_python(env_dir).exists():
            print(f"creating virtual environment {env_dir}")
            venv.EnvBuilder(with_pip=True).create(env_dir)
        python = venv_python(env_dir)
        if not args.offline:
            run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    if args.offline and args.sdist is None:
        parser.error("--offline needs --sdist")

    cmake_args = engine_cmake_args(os.environ.get("CMAKE_ARGS", ""))
    wheel = build_wheel(python, args.sdist, cmake_args, args.offline)
    index = ["--no-index"] if args.offline else []
    run([str(python), "-m", "pip", "install", *index, "--force-reinstall", "--no-deps", str(wheel)])
    if not args.offline:
        run([str(python), "-m", "pip", "install", "--quiet", "numpy", "jinja2", "diskcache",
             "typing-extensions"])
    if not args.engine_only:
        target = "." if args.no_dev else ".[dev]"
        deps = ["--no-deps"] if args.offline else []
        editable = [] if args.no_editable else ["-e"]
        run([str(python), "-m", "pip", "install", *index, *deps, "--quiet", *editable, target],
            cwd=REPO)
    print(f"\nMoE Desk is installed. Python: {python}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
