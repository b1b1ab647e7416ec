"""Starting and watching the engine process: token hand-over, ready line, log, exit status.

The client (``app.engine.client``) connects to what this starts; when the connection drops,
``EngineProcess.died_error`` says how the process ended, quoting the end of its log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path, PureWindowsPath
from typing import IO

from app import paths
from app.engine.transport import HAS_UNIX_SOCKETS, SOCKET_NAME, Address, new_token
from app.errors import EngineDiedError

log = logging.getLogger("moedesk.client")

# The folder holding the ``app`` package: the engine is started as ``-m app.engine`` from it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 20
KEPT_LOGS = 10  # logs of engines that ended badly, kept in paths.logs_dir(); older ones go


def engine_command(executable: str | None = None, frozen: bool | None = None,
                   windows: bool | None = None) -> tuple[list[str], bool]:
    """The command that runs the engine, and whether it needs the checkout on PYTHONPATH.

    From source: this Python with ``-m app.engine``. In a PyInstaller bundle the bundle's own
    program answers ``-m app.engine`` (installers/pyinstaller/entry.py), except on Windows,
    where the desktop app is the windowed MoEDesk.exe, whose standard handles cannot carry the
    engine's token and ready line: the console program beside it, moedesk-cli.exe, runs it."""
    executable = executable or sys.executable
    frozen = getattr(sys, "frozen", False) if frozen is None else frozen
    windows = os.name == "nt" if windows is None else windows
    if frozen and windows:
        return [str(PureWindowsPath(executable).with_name("moedesk-cli.exe")), "--engine"], False
    return [executable, "-m", "app.engine"], not frozen


class EngineProcess:
    """An engine process a client started: its pipes, its log, and how it ended."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log_start: int,
                 run_dir: Path) -> None:
        self.popen = popen
        self.log_path = log_path
        self._log_start = log_start  # where this run begins in a log file that is appended to
        self._run_dir = run_dir  # private temp folder: the socket, and the log if not given

    @classmethod
    def start(cls, *, log_path: str | Path | None = None, ready_timeout: float = 120.0,
              tcp: bool = False, env: Mapping[str, str] | None = None,
              ) -> tuple[EngineProcess, Address, str]:
        """Start ``python -m app.engine``, hand it a fresh token on stdin, wait for "ready"."""
        run_dir = Path(tempfile.mkdtemp(prefix="moedesk-"))  # 0700, ours alone
        log_file = Path(log_path) if log_path is not None else run_dir / "engine.log"
        paths.private_file(log_file)  # errors name model paths: the user's alone
        command, needs_path = engine_command()
        command.append("--child")
        if tcp or not HAS_UNIX_SOCKETS:
            command.append("--tcp")
        else:
            command += ["--socket", str(run_dir / SOCKET_NAME)]
        environ = {**os.environ, **(env or {})}
        if needs_path:
            environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(PROJECT_ROOT), environ.get("PYTHONPATH", "")) if p)
        token = new_token()
        with open(log_file, "ab") as log_out:
            log_start = log_out.tell()
            # the caller's working directory stays: relative model paths mean the same there
            popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log_out, env=environ,
                                     creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        process = cls(popen, log_file, log_start, run_dir)
        try:
            assert popen.stdin is not None
            # the token travels on a pipe, never on the command line where others can read it;
            # stdin stays open: the engine exits when it closes, i.e. when we are gone
            popen.stdin.write(token.encode() + b"\n")
            popen.stdin.flush()
            address = process._wait_ready(ready_timeout)
        except BaseException:
            process.stop(timeout=5.0)
            process.cleanup()
            raise
        return process, address, token

    def _wait_ready(self, timeout: float) -> Address:
        """The address from the engine's ready line (read on a helper thread: a pipe read
        has no timeout of its own)."""
        assert self.popen.stdout is not None
        stdout: IO[bytes] = self.popen.stdout
        found: queue.Queue[Address | None] = queue.Queue()

        def read_ready() -> None:
            for line in iter(stdout.readline, b""):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    ready = json.loads(line)
                    if ready["event"] == "ready":
                        found.put(Address.parse(ready["address"]))
                        return
            found.put(None)  # stdout closed: the engine ended before it was ready

        threading.Thread(target=read_ready, name="engine-ready", daemon=True).start()
        try:
            address = found.get(timeout=timeout)
        except queue.Empty:
            raise EngineDiedError(f"the engine did not start within {timeout:.0f} s.",
                                  self._log_hint("Its log")) from None
        if address is None:
            raise self.died_error(starting=True)
        stdout.close()
        return address

    def wait(self, timeout: float | None) -> int | None:
        """The exit status once the process has ended (within ``timeout``), else None."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """End the process: closing stdin asks it to exit; SIGTERM, then SIGKILL, insist."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        if self.wait(timeout) is None:
            self.popen.terminate()
            if self.wait(5.0) is None:
                self.popen.kill()
                self.popen.wait()

    def cleanup(self) -> None:
        """Remove the private run folder (the socket, and a log nobody asked to keep)."""
        for path in self._run_dir.iterdir() if self._run_dir.exists() else ():
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self._run_dir.rmdir()

    def log_tail(self, max_lines: int = LOG_TAIL_LINES) -> str:
        """The last lines this run wrote to its log."""
        try:
            with open(self.log_path, "rb") as log_in:
                size = log_in.seek(0, os.SEEK_END)
                log_in.seek(max(self._log_start, size - 16384))
                text = log_in.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-max_lines:])

    def keep_log(self) -> Path:
        """Move a temporary log (one nobody asked to keep, in the run folder ``cleanup`` removes)
        to ``paths.logs_dir()``, so that an error naming it still points at a file after the
        client closes; return where the log is now."""
        if self.log_path.parent != self._run_dir or not self.log_path.exists():
            return self.log_path
        folder = paths.private_dir(paths.logs_dir())
        kept = folder / f"engine-{time.strftime('%Y%m%d-%H%M%S')}-{self.popen.pid}.log"
        try:
            paths.private_file(kept)
            shutil.copyfile(self.log_path, kept)  # the run folder is often on another file system
        except OSError:
            log.warning("could not keep the engine log in %s", folder, exc_info=True)
            return self.log_path
        self.log_path.unlink(missing_ok=True)
        self.log_path = kept
        for old in sorted(folder.glob("engine-*.log"))[:-KEPT_LOGS]:
            with contextlib.suppress(OSError):
                old.unlink()
        return kept

    def _log_hint(self, prefix: str) -> str:
        self.keep_log()
        tail = self.log_tail()
        if not tail:
            return f"{prefix} ({self.log_path}) is empty."
        return f"{prefix} ({self.log_path}) ends with:\n{tail}"

    def died_error(self, expected: bool = False, starting: bool = False,
                   wait_s: float = 10.0) -> EngineDiedError:
        """An EngineDiedError saying how the process ended (waiting briefly for it to end:
        its socket can close a moment before its exit status is ready)."""
        code = self.wait(wait_s)
        if expected and code == 0:
            return EngineDiedError("the engine has shut down.")
        if code is None:
            how = "closed the connection but is still running"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            how = f"was killed by signal {-code} ({name})"
        else:
            how = f"exited with code {code}"
        when = "while starting" if starting else "unexpectedly"
        hint = self._log_hint("Its log")
        if code == -getattr(signal, "SIGKILL", 9):
            hint = ("A SIGKILL nobody sent is usually the system running out of memory: try a "
                    "placement with more experts in RAM, a smaller context or quant. " + hint)
        return EngineDiedError(f"the engine process {how} {when}.", hint, returncode=code,
                               log_tail=self.log_tail())
