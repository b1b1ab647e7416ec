"""The top-level guard's record: an unexpected failure is one line for the user, and its
traceback goes to a log file the line names (readable by the user only, and kept).

Expected failures (a damaged model, a missing shard, the Hub unreachable, a full disk) have
their own exception types with the cause and the fix, and never come here; what does is a bug
or a system failure nobody anticipated, so the line asks for a report with the log.
"""

from __future__ import annotations

import datetime
import os
import traceback
from pathlib import Path

from app import paths


def log_path(program: str) -> Path:
    """The log of ``program`` ("moedesk-cli", "moedesk") in MoE Desk's logs folder."""
    return paths.logs_dir() / f"{program}.log"


def record(exc: BaseException, program: str) -> Path | None:
    """Append ``exc``'s traceback to ``program``'s log; its path, or None if it cannot be
    written (a full disk, say: then the line says so instead of naming a file that is not there)."""
    path = log_path(program)
    try:
        paths.private_file(path)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with open(path, "a", encoding="utf-8", errors="replace") as log:
            log.write(f"--- {stamp} {program} (pid {os.getpid()})\n")
            log.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


def describe(exc: BaseException, program: str) -> str:
    """``exc`` in one line for the user, after recording its traceback in the log."""
    log = record(exc, program)
    where = f"the details are in {log}" if log else "the details could not be written to a log"
    if isinstance(exc, OSError) and exc.strerror:
        # the system refused something (permissions, a full disk): say what, and on which file
        on = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{on}; {where}."
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return (f"an unexpected {type(exc).__name__}" + (f" ({text})" if text else "") +
            f". This is a bug in MoE Desk; {where}: please report it with that file.")
