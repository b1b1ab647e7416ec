"""Desktop integration for a per-user Linux install: launchers, the menu entry, the icon and
the uninstall script, following the freedesktop.org desktop entry and icon theme specs.

Every file is written to a temporary name and renamed into place, so an interrupted install
never leaves half a file, and running the installer again simply rewrites them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

APP_ID = "moedesk"  # the desktop file's and the icon's name; the app should set the same
#                     QGuiApplication.desktopFileName so Wayland docks match its window


@dataclass(frozen=True)
class Layout:
    """Where a per-user install puts each file (every one of them can be moved by options)."""

    venv: Path
    data_dir: Path  # ~/.local/share/moedesk: the uninstall script (and, by default, the venv)
    bin_dir: Path  # ~/.local/bin: launchers
    applications_dir: Path  # ~/.local/share/applications
    icon_theme_dir: Path  # ~/.local/share/icons/hicolor: the icon goes in scalable/apps/

    @property
    def launcher(self) -> Path:
        return self.bin_dir / APP_ID

    @property
    def cli_launcher(self) -> Path:
        return self.bin_dir / f"{APP_ID}-cli"

    @property
    def desktop_file(self) -> Path:
        return self.applications_dir / f"{APP_ID}.desktop"

    @property
    def icon(self) -> Path:
        return self.icon_theme_dir / "scalable" / "apps" / f"{APP_ID}.svg"

    @property
    def uninstaller(self) -> Path:
        return self.data_dir / "uninstall.sh"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def launcher_script(target: Path) -> str:
    """A launcher in ~/.local/bin that runs ``target`` (a script in the venv) with its args."""
    return ("#!/bin/sh\n# MoE Desk launcher, written by installers/linux/install.sh\n"
            f"exec {shlex.quote(str(target))} \"$@\"\n")


def desktop_exec_arg(value: str) -> str:
    """``value`` as one argument of a desktop entry's Exec key (the spec's quoting rules, then
    the string escaping every value gets)."""
    reserved = set(" \t\n\"'\\><~|&;$*?#()`")
    if any(ch in reserved for ch in value):
        inner = "".join("\\" + ch if ch in '"`$\\' else ch for ch in value)
        value = f'"{inner}"'
    return value.replace("\\", "\\\\")


def desktop_entry(launcher: Path) -> str:
    """The menu entry: runs the launcher by its absolute path, so it works even when
    ~/.local/bin is not on the session's PATH."""
    exe = desktop_exec_arg(str(launcher))
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",  # the newest desktop-file-validate 0.26 (Debian 12) knows
        "Name=MoE Desk",
        "GenericName=Local AI chat",
        "Comment=Run giant Mixture-of-Experts language models on this computer",
        f"TryExec={exe}",
        f"Exec={exe}",
        f"Icon={APP_ID}",
        "Terminal=false",
        "Categories=Science;ArtificialIntelligence;",
        "Keywords=LLM;AI;chat;llama;MoE;GGUF;",
        f"StartupWMClass={APP_ID}",
        "",
    ])


def validate_desktop_entry(path: Path) -> str | None:
    """desktop-file-validate's complaints about ``path`` (None if valid or the tool is absent)."""
    if shutil.which("desktop-file-validate") is None:
        return None
    done = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
    return (done.stdout + done.stderr).strip() if done.returncode != 0 else None


def uninstall_script(layout: Layout, user_data: list[Path]) -> str:
    """A shell script removing what the installer wrote, and nothing the user made."""
    q = shlex.quote
    files = [layout.launcher, layout.cli_launcher, layout.desktop_file, layout.icon]
    kept = "\n".join(f"echo '  {p}'" for p in user_data)
    return f"""#!/bin/sh
# Removes MoE Desk as installed by installers/linux/install.sh. Conversations, settings and
# downloaded models are kept: delete the folders printed at the end to remove them too.
set -eu
# only a folder that is a virtual environment, so a mistyped --venv never removes anything else
if [ -f {q(str(layout.venv / "pyvenv.cfg"))} ]; then rm -rf {q(str(layout.venv))}; fi
rm -f {" ".join(q(str(p)) for p in files)}
if command -v update-desktop-database >/dev/null 2>&1; then
  update-desktop-database {q(str(layout.applications_dir))} || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then
  gtk-update-icon-cache -q -t {q(str(layout.icon_theme_dir))} || true
fi
rm -f "$0"
echo "MoE Desk is removed. Your data is kept in:"
{kept}
"""


def refresh_caches(layout: Layout) -> None:
    """Tell menus and icon themes about the new files, where the tools for that exist (the
    desktop picks them up at the next login anyway)."""
    commands = [["update-desktop-database", str(layout.applications_dir)]]
    if (layout.icon_theme_dir / "index.theme").exists():  # the cache tool refuses a theme without
        commands.append(["gtk-update-icon-cache", "-q", "-t", str(layout.icon_theme_dir)])
    for command in commands:
        if shutil.which(command[0]):
            subprocess.run(command, capture_output=True)


def install_desktop_files(layout: Layout, icon_source: Path, user_data: list[Path]) -> None:
    """Write the launchers, the icon, the menu entry (validated) and the uninstall script."""
    for launcher, script in ((layout.launcher, "moedesk"), (layout.cli_launcher, "moedesk-cli")):
        write_atomically(launcher, launcher_script(layout.venv / "bin" / script), 0o755)
    write_atomically(layout.icon, icon_source.read_text(encoding="utf-8"))
    # validate before the entry goes live, so a bad one never shows up in the menu
    staged = layout.applications_dir / f".{APP_ID}.staged.desktop"
    write_atomically(staged, desktop_entry(layout.launcher))
    problems = validate_desktop_entry(staged)
    if problems:
        staged.unlink()
        raise RuntimeError(f"the desktop entry failed desktop-file-validate:\n{problems}")
    os.replace(staged, layout.desktop_file)
    write_atomically(layout.uninstaller, uninstall_script(layout, user_data), 0o755)
    refresh_caches(layout)
