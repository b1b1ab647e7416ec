"""The CUDA runtime (libcudart) through ctypes, found where llama.cpp's CUDA build finds it.

Only what the host-to-GPU copy probe (app/hardware/h2d.py) needs: devices, their names,
device and pinned host allocations, a synchronous host-to-device copy. Loading the library
starts nothing; the first call initialises the driver (a CUDA context: hundreds of MB of VRAM
until the process ends), which is why the probe runs in a child process.

Where the library is looked for, in order:

1. ``MOEDESK_CUDART``: a path (unusual installs; the tests' stand-in runtime);
2. the engine's library folder (``llama_cpp/lib``), where a bundled build (Windows, a wheel)
   keeps its CUDA runtime beside ``ggml-cuda``; found without importing llama_cpp;
3. by name through the system's loader (``LD_LIBRARY_PATH``, ``ld.so.cache``; ``PATH`` on
   Windows), as the loader resolves ``libggml-cuda``'s own dependency: its soname first;
4. the CUDA toolkit's folders (``CUDA_HOME``, ``CUDA_PATH``, ``/usr/local/cuda``: where the
   installer's build took ``nvcc`` from) and pip's ``nvidia-cuda-runtime`` wheel.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "MOEDESK_CUDART"
# newest first; a build's own soname (read from libggml-cuda) goes before them
SONAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so")
WINDOWS_NAMES = ("cudart64_13.dll", "cudart64_12.dll", "cudart64_110.dll")
CUDA_MEMCPY_HOST_TO_DEVICE = 1
CUDA_SUCCESS = 0
# cudaDeviceProp begins with ``char name[256]`` in every CUDA version; the rest of it has
# grown from release to release (about 1 KB in CUDA 12), so a generous buffer takes any
PROP_BUFFER = 16384
SONAME_SCAN_BYTES = 8 << 20  # the dynamic string table lies near an ELF file's start


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and the runtime's reason."""


class CudaRuntime:
    """The few libcudart calls the copy probe makes, each checked."""

    def __init__(self, lib: ctypes.CDLL, origin: str) -> None:
        self.lib = lib
        self.origin = origin  # the path or name it was loaded by
        vp, sz, ci = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        signatures: dict[str, list[object]] = {
            "cudaGetDeviceCount": [ctypes.POINTER(ci)],
            "cudaSetDevice": [ci],
            "cudaRuntimeGetVersion": [ctypes.POINTER(ci)],
            "cudaMalloc": [ctypes.POINTER(vp), sz],
            "cudaFree": [vp],
            "cudaHostAlloc": [ctypes.POINTER(vp), sz, ctypes.c_uint],
            "cudaFreeHost": [vp],
            "cudaMemcpy": [vp, vp, sz, ci],
            "cudaDeviceSynchronize": [],
        }
        for name, argtypes in signatures.items():
            func = getattr(lib, name)
            func.argtypes, func.restype = argtypes, ci
        lib.cudaGetErrorString.argtypes, lib.cudaGetErrorString.restype = [ci], ctypes.c_char_p
        # CUDA 12's headers call the _v2 symbol; older runtimes have only the first
        self._props = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
        self._props.argtypes, self._props.restype = [ctypes.c_void_p, ci], ci

    def check(self, call: str, status: int) -> None:
        if status != CUDA_SUCCESS:
            reason = self.lib.cudaGetErrorString(status)
            raise CudaError(f"{call} failed: {reason.decode(errors='replace') if reason else ''} "
                            f"(CUDA error {status})")

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        status = self.lib.cudaGetDeviceCount(ctypes.byref(count))
        if status == 100:  # cudaErrorNoDevice: a runtime and a driver, but no GPU
            return 0
        self.check("cudaGetDeviceCount", status)
        return count.value

    def set_device(self, device: int) -> None:
        self.check("cudaSetDevice", self.lib.cudaSetDevice(device))

    def device_name(self, device: int) -> str:
        props = ctypes.create_string_buffer(PROP_BUFFER)
        self.check("cudaGetDeviceProperties", self._props(props, device))
        return props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")

    def version(self) -> str:
        """The runtime's version, "12.8"."""
        value = ctypes.c_int(0)
        self.check("cudaRuntimeGetVersion", self.lib.cudaRuntimeGetVersion(ctypes.byref(value)))
        return f"{value.value // 1000}.{value.value % 1000 // 10}"

    def malloc(self, n_bytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check("cudaMalloc", self.lib.cudaMalloc(ctypes.byref(ptr), n_bytes))
        return ptr.value or 0

    def free(self, ptr: int) -> None:
        self.check("cudaFree", self.lib.cudaFree(ptr))

    def host_alloc(self, n_bytes: int) -> int:
        """Page-locked host memory (cudaHostAllocDefault), what llama.cpp's CUDA host buffer is."""
        ptr = ctypes.c_void_p()
        self.check("cudaHostAlloc", self.lib.cudaHostAlloc(ctypes.byref(ptr), n_bytes, 0))
        return ptr.value or 0

    def free_host(self, ptr: int) -> None:
        self.check("cudaFreeHost", self.lib.cudaFreeHost(ptr))

    def copy_to_device(self, device_ptr: int, host_ptr: int, n_bytes: int) -> None:
        """A host-to-device copy, finished on return: from pageable memory cudaMemcpy returns
        once its staging buffer holds the last bytes, before their DMA ends, hence the sync."""
        self.check("cudaMemcpy", self.lib.cudaMemcpy(device_ptr, host_ptr, n_bytes,
                                                     CUDA_MEMCPY_HOST_TO_DEVICE))
        self.check("cudaDeviceSynchronize", self.lib.cudaDeviceSynchronize())


def load_cudart(path: str | None = None) -> CudaRuntime | None:
    """The first CUDA runtime that loads (``path`` only, when given), or None when none does."""
    for candidate in [path] if path else candidates():
        try:
            return CudaRuntime(ctypes.CDLL(candidate), candidate)
        except (OSError, AttributeError):  # missing, another architecture, not a CUDA runtime
            continue
    return None


def candidates() -> Iterator[str]:
    """Paths and names to try, in the order the module's docstring gives."""
    if os.environ.get(ENV_VAR):
        yield os.environ[ENV_VAR]
        return
    engine_libs = _engine_lib_dir()
    windows = sys.platform == "win32"
    patterns = ("cudart64_*.dll",) if windows else ("libcudart.so*",)
    if engine_libs is not None:
        for pattern in patterns:
            yield from (str(p) for p in sorted(engine_libs.glob(pattern), reverse=True))
    names = WINDOWS_NAMES if windows else SONAMES
    own = _engine_soname(engine_libs) if engine_libs is not None and not windows else None
    yield from ([own] if own else []) + [n for n in names if n != own]
    for folder in _toolkit_dirs(windows):
        for pattern in patterns:
            yield from (str(p) for p in sorted(folder.glob(pattern), reverse=True))


def _engine_lib_dir() -> Path | None:
    """llama_cpp's ``lib`` folder, without importing llama_cpp (nothing outside app/engine does)."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return folder if folder.is_dir() else None


def _engine_soname(engine_libs: Path) -> str | None:
    """The libcudart soname the engine's libggml-cuda needs ("libcudart.so.12"), if it has one."""
    try:
        with (engine_libs / "libggml-cuda.so").open("rb") as f:
            head = f.read(SONAME_SCAN_BYTES)
    except OSError:
        return None
    found = re.search(rb"libcudart\.so\.[0-9.]+", head)
    return found.group().decode().rstrip(".") if found else None


def _toolkit_dirs(windows: bool) -> Iterator[Path]:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in dict.fromkeys(r for r in roots if r):
        for sub in (("bin",) if windows else ("lib64", "lib", "targets/x86_64-linux/lib")):
            if (Path(root) / sub).is_dir():
                yield Path(root) / sub
    for site in sys.path:  # pip's nvidia-cuda-runtime-cu12/-cu13 wheels
        folder = Path(site) / "nvidia" / "cuda_runtime" / ("bin" if windows else "lib")
        if folder.is_dir():
            yield folder
