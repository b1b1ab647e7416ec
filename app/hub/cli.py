"""``moedesk-cli library`` (the local model library) and ``login``/``logout`` (the Hub token).

    moedesk-cli library [list]              the models on this machine, with size and shards
    moedesk-cli library import PATH         a GGUF file (any shard) or a folder of them, by reference
    moedesk-cli library import-hf-cache     the GGUF models already in the Hugging Face cache
    moedesk-cli library delete NAME         a download's files; an imported model is only forgotten
    moedesk-cli login                       save a Hub token in the system keyring (prompt or stdin)
    moedesk-cli logout                      remove it
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from app.hub import token as hub_token
from app.hub.library import ImportReport, Library, LibraryError, LocalModel
from app.paths import default_models_dir


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``library``, ``login`` and ``logout``; each sets ``args.func``."""
    library = subparsers.add_parser("library", help="models on this machine: list, import, delete")
    library.add_argument("--models-dir", type=Path, default=default_models_dir(),
                         help="where downloads are (default: %(default)s)")
    actions = library.add_subparsers(dest="action")
    actions.add_parser("list", help="list the models (the default)")
    imp = actions.add_parser("import", help="import a .gguf file (any shard) or a folder, by reference")
    imp.add_argument("path", type=Path)
    hf = actions.add_parser("import-hf-cache", help="import the GGUF models in the Hugging Face cache")
    hf.add_argument("--cache-dir", type=Path, default=None,
                    help="the cache folder (default: huggingface_hub's, HF_HUB_CACHE)")
    delete = actions.add_parser("delete", help="delete a download, or forget an imported model")
    delete.add_argument("name", help="as 'library list' shows it")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    library.set_defaults(func=cmd_library)

    login = subparsers.add_parser("login", help="save a Hugging Face token in the system keyring")
    login.add_argument("--stdin", action="store_true",
                       help="read the token from standard input (default when it is not a terminal)")
    login.set_defaults(func=cmd_login)
    logout = subparsers.add_parser("logout", help="remove the Hugging Face token from the keyring")
    logout.set_defaults(func=cmd_logout)


def cmd_library(args: argparse.Namespace) -> int:
    library = Library(models_dir=args.models_dir)
    try:
        if args.action in (None, "list"):
            print_models(library.models(include_unavailable=True), library)
        elif args.action == "import":
            print_report(library.import_path(args.path))
        elif args.action == "import-hf-cache":
            report = library.import_hf_cache(args.cache_dir)
            if not (report.added or report.already or report.skipped):
                print("No GGUF models in the Hugging Face cache.")
            print_report(report)
        elif args.action == "delete":
            return delete(library, args.name, args.yes)
    except LibraryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def print_models(models: list[LocalModel], library: Library) -> None:
    if not models:
        print(f"The library is empty. Download a model ('moedesk-cli download REPO --quant Q') into "
              f"{library.models_dir}, or import one ('moedesk-cli library import PATH').")
        return
    width = max(len(m.name) for m in models)
    for m in models:
        facts = (f"{m.architecture or '?':10} {m.quant or '?':9} {m.size / 1e9:8.2f} GB "
                 f"{len(m.shards):3} shard(s)")
        print(f"{m.name:{width}}  {m.source:8} {facts}  {m.path}")
        if m.problem:
            print(f"{'':{width}}  ! not loadable: {m.problem}")


def print_report(report: ImportReport) -> None:
    for model in report.added:
        print(f"imported {model.name}: {model.path} ({model.size / 1e9:.2f} GB)")
    for model in report.already:
        print(f"already in the library as {model.name}: {model.path}")
    for path, why in report.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)


def delete(library: Library, name: str, yes: bool) -> int:
    model = library.get(name)
    if not model.imported and not yes:
        question = f"Delete {len(model.shards)} file(s), {model.size / 1e9:.2f} GB, of {name}? [y/N] "
        if not sys.stdin.isatty():
            print(f"error: deleting {name} removes its files; pass --yes to confirm.", file=sys.stderr)
            return 2
        if input(question).strip().lower() not in ("y", "yes"):
            return 1
    library.delete(name)
    print(f"forgot {name} (its files stay in {model.path.parent})" if model.imported
          else f"deleted {name}")
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    if args.stdin or not sys.stdin.isatty():
        token = sys.stdin.readline()
    else:
        print(f"Paste an access token from {hub_token.hub_endpoint()}/settings/tokens "
              "(the input is hidden).", file=sys.stderr)
        token = getpass.getpass("Token: ")
    where = hub_token.save_token(token)  # HubError subclasses: main() prints them
    print(f"Token saved in the system keyring ({where}).")
    if hub_token.token_source() == "environment":
        print("Note: HF_TOKEN is set in the environment; it is used instead of the saved token.")
    return 0


def cmd_logout(_args: argparse.Namespace) -> int:
    removed = hub_token.delete_token()
    print("Token removed from the system keyring." if removed else "No token was saved in the keyring.")
    if hub_token.token_source() == "environment":
        print("Note: HF_TOKEN is still set in the environment, and is still used.")
    return 0
