"""How fast this host copies to its GPU: a short measured probe through the CUDA runtime, cached.

Prefill with routed experts in RAM copies them to the GPU for every ubatch (llama.cpp's op
offload), so its speed is the copy rate's. From pinned memory (a model loaded without mmap:
llama.cpp's CUDA host buffer) the GPU's DMA reads the bytes at the link's speed; from pageable
memory (a memory-mapped model file) the CUDA driver first copies them through a staging buffer
of its own, at a rate that depends on the host, its kernel and the driver, which no RAM probe
measures (issue 19: the numpy copy ranked two hosts the wrong way round). So the probe times
``cudaMemcpy`` to CUDA device 0 (where llama.cpp offloads ops) from:

* ``pageable``: anonymous memory (numpy, like malloc);
* ``mapped``: a file of the cache folder's drive mapped read-only from the page cache, as
  llama.cpp maps a model (populated first; None where no such file could be written);
* ``pinned``: page-locked memory (``cudaHostAlloc``).

Each is one warm-up copy and then the median of ``repeats`` copies of ``copy_bytes`` (256 MiB).
The probe runs in a child process, so that a driver's crash or hang cannot take the app down and
its CUDA context (VRAM) goes when it ends: about a second, once per machine and set of GPUs.
A failure is a result (``ProbeState.FAILED`` and its cause), never an exception; a machine
without an NVIDIA GPU gets ``ProbeState.NO_GPU`` without a child process.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from enum import Enum
from multiprocessing.connection import Connection
from pathlib import Path

from app import paths
from app.hardware.cudart import CudaError, CudaRuntime, load_cudart
from app.hardware.gpus import nvidia_gpus
from app.hardware.probe_cache import cache_path, cpu_key, read_cache, write_cache

log = logging.getLogger("moedesk.hardware")
CACHE_KEY = "host_copy"
PROBE_VERSION = 1
DEFAULT_COPY_BYTES = 256 << 20  # far past the size where a copy's fixed costs matter
DEFAULT_REPEATS = 3
# a CUDA context on a machine with many GPUs, and a driver loading its modules, take seconds;
# past this the child is stopped and the probe reported failed
DEFAULT_TIMEOUT_S = 60.0


class ProbeState(Enum):
    MEASURED = "measured"
    NO_GPU = "no NVIDIA GPU"
    NO_RUNTIME = "no CUDA runtime"
    FAILED = "failed"


@dataclass(frozen=True)
class HostCopyRates:
    """Host-to-GPU copy rates of CUDA device 0, in bytes/s."""

    gpu: str  # the device's name, as the runtime (and NVML) give it
    pageable: float  # from anonymous pageable memory
    pinned: float  # from page-locked memory
    mapped: float | None  # from a file mapped from the page cache; None: not measured
    copy_bytes: int
    runtime: str = ""  # which libcudart, and its version

    @property
    def from_file(self) -> float:
        """What copies from a memory-mapped model reach: the mapped figure, else the pageable one."""
        return self.mapped or self.pageable


@dataclass(frozen=True)
class HostCopyProbe:
    """The probe's outcome: figures, or why there are none."""

    state: ProbeState
    rates: HostCopyRates | None = None
    detail: str = ""  # the cause, when not measured

    def describe(self) -> str:
        """One line for a hardware report."""
        r = self.rates
        if r is None:
            why = f"{self.state.value}: {self.detail}" if self.detail else self.state.value
            return f"Host to GPU copies: not measured ({why})"
        mapped = f", {r.mapped / 1e9:.1f} GB/s from a mapped file" if r.mapped else ""
        return (f"Host to GPU copies ({r.gpu}): {r.pinned / 1e9:.1f} GB/s from pinned memory, "
                f"{r.pageable / 1e9:.1f} GB/s from pageable{mapped} (measured, CUDA {r.runtime})")


def host_copy_probe(refresh: bool = False, cache: Path | None = None) -> HostCopyProbe:
    """This machine's figures: from the cache when it holds this machine's and these GPUs',
    else measured now (and cached when measured). ``refresh`` measures again."""
    gpus, nvml_error = nvidia_gpus()
    if not gpus:
        return HostCopyProbe(ProbeState.NO_GPU, detail=nvml_error or "")
    key = {"machine": cpu_key(), "gpus": [g.name for g in gpus], "version": PROBE_VERSION}
    cache = cache_path(cache)
    data = read_cache(cache)
    entry = data.get(CACHE_KEY)
    if not refresh and isinstance(entry, dict) and all(entry.get(k) == v for k, v in key.items()):
        try:
            return HostCopyProbe(ProbeState.MEASURED, HostCopyRates(**entry["rates"]))
        except (KeyError, TypeError):
            pass  # written by another version: measure again
    probe = measure_host_copies()
    if probe.rates is not None:
        data[CACHE_KEY] = {**key, "rates": asdict(probe.rates)}
        write_cache(cache, data)
    elif probe.state is ProbeState.FAILED:  # not cached: a busy GPU may let it pass next time
        log.warning("host-to-GPU copy probe failed: %s", probe.detail)
    return probe


def measure_host_copies(runtime: str | None = None, copy_bytes: int = DEFAULT_COPY_BYTES,
                        repeats: int = DEFAULT_REPEATS, scratch_dir: Path | None = None,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> HostCopyProbe:
    """Run the probe now, in a child process (``runtime``: a libcudart to load instead of
    looking for one; ``scratch_dir``: where the mapped file is written, the cache folder)."""
    scratch_dir = scratch_dir or paths.cache_dir()
    # spawn, not fork: a clean interpreter (the app's threads and Qt stay behind), and the
    # one start method frozen builds support everywhere (installers/pyinstaller/entry.py)
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, runtime, copy_bytes, repeats, str(scratch_dir)),
                            name="moedesk-h2d-probe", daemon=True)
    answer, why = None, ""
    try:
        child.start()
        send.close()  # the child holds the only write end now: its death ends the pipe
        if receive.poll(timeout_s):
            answer = receive.recv()
        else:
            why = f"no answer within {timeout_s:.0f} s"
    except EOFError:  # it died before answering
        pass
    except Exception as exc:  # noqa: BLE001 - it could not start (a daemon's child, a frozen app's bootstrap)
        why = f"it could not start: {exc}"
    finally:
        receive.close()
        if child.pid is not None:
            child.join(timeout=0 if why else 5)
            if child.is_alive():
                child.kill()
                child.join()
    if answer is None:
        why = why or f"it ended with exit code {child.exitcode}"
        return HostCopyProbe(ProbeState.FAILED, detail=f"the probe process gave no figures ({why})")
    return _from_answer(answer)


def _from_answer(answer: dict) -> HostCopyProbe:
    state = ProbeState(answer["state"])
    rates = HostCopyRates(**answer["rates"]) if answer.get("rates") else None
    return HostCopyProbe(state, rates, answer.get("detail", ""))


def _child(send: Connection, runtime: str | None, copy_bytes: int, repeats: int, scratch_dir: str) -> None:
    """The child process: measure and send one answer (a plain dict) back."""
    try:
        answer = probe_in_process(runtime, copy_bytes, repeats, Path(scratch_dir))
    except Exception as exc:  # noqa: BLE001 - any failure is an answer, never a lost child
        answer = {"state": ProbeState.FAILED.value, "detail": f"{type(exc).__name__}: {exc}"}
    send.send(answer)
    send.close()


def probe_in_process(runtime: str | None, copy_bytes: int, repeats: int, scratch_dir: Path) -> dict:
    """The probe in this process (the child's work; the tests' stand-in runtime runs it here).
    Returns a plain dict: what the child sends back."""
    rt = load_cudart(runtime)
    if rt is None:
        where = runtime or "its library folder, the system's loader or a CUDA toolkit"
        return {"state": ProbeState.NO_RUNTIME.value,
                "detail": f"no libcudart found in {where} (llama.cpp's CUDA build needs one too)"}
    try:
        if rt.device_count() == 0:
            return {"state": ProbeState.NO_GPU.value, "detail": "the CUDA runtime sees no device"}
        rates = measure_rates(rt, copy_bytes, repeats, scratch_dir)
    except CudaError as exc:
        return {"state": ProbeState.FAILED.value, "detail": str(exc)}
    return {"state": ProbeState.MEASURED.value, "rates": asdict(rates)}


def measure_rates(rt: CudaRuntime, copy_bytes: int, repeats: int, scratch_dir: Path) -> HostCopyRates:
    """Copy ``copy_bytes`` to CUDA device 0 from each kind of host memory, ``repeats`` times."""
    import numpy as np

    rt.set_device(0)
    name = rt.device_name(0)
    device = rt.malloc(copy_bytes)
    try:
        pageable = np.ones(copy_bytes, dtype=np.uint8)  # ones, not empty: every page must exist
        pageable_rate = _rate(rt, device, pageable.ctypes.data, copy_bytes, repeats)
        mapped_rate = _mapped_rate(rt, device, pageable, repeats, scratch_dir)
        del pageable
        pinned = rt.host_alloc(copy_bytes)
        try:
            ctypes.memset(pinned, 1, copy_bytes)  # written, as a loaded model's bytes are
            pinned_rate = _rate(rt, device, pinned, copy_bytes, repeats)
        finally:
            rt.free_host(pinned)
    finally:
        rt.free(device)
    return HostCopyRates(gpu=name, pageable=pageable_rate, pinned=pinned_rate, mapped=mapped_rate,
                         copy_bytes=copy_bytes, runtime=f"{rt.version()}, {Path(rt.origin).name}")


def _rate(rt: CudaRuntime, device: int, host: int, n_bytes: int, repeats: int) -> float:
    # the warm-up pays once for the driver's staging buffers and a mapping's page tables, as
    # llama.cpp's first ubatch does, never its later ones
    rt.copy_to_device(device, host, n_bytes)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        rt.copy_to_device(device, host, n_bytes)
        times.append(time.perf_counter() - start)
    return n_bytes / max(statistics.median(times), 1e-9)


def _mapped_rate(rt: CudaRuntime, device: int, contents, repeats: int,  # noqa: ANN001 - a numpy array
                 scratch_dir: Path) -> float | None:
    """The rate from a file mapped as llama.cpp maps a model: its pages in the page cache
    (just written), mapped read-only and populated. None where the file cannot be written."""
    import numpy as np

    n_bytes = contents.nbytes
    try:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="h2d-probe-", dir=scratch_dir)
    except OSError as exc:
        log.info("no mapped-file copy probe: %s", exc)
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            contents.tofile(f)
        with open(name, "rb") as f:
            if sys.platform == "win32":
                mapping = mmap.mmap(f.fileno(), n_bytes, access=mmap.ACCESS_READ)
            else:
                flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # llama.cpp's prefetch
                mapping = mmap.mmap(f.fileno(), n_bytes, flags=flags, prot=mmap.PROT_READ)
        view = np.frombuffer(mapping, dtype=np.uint8)
        try:
            rate = _rate(rt, device, view.ctypes.data, n_bytes, repeats)
        finally:
            del view  # the mapping cannot close while a view holds it
            mapping.close()
    except OSError as exc:  # a full disk, a file system without mmap
        log.info("no mapped-file copy probe: %s", exc)
        return None
    finally:
        try:
            os.unlink(name)  # before its pages are ever written back, usually
        except OSError:
            pass
    return rate
