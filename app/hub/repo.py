"""What the Hub has: search GGUF repos, list a repo's quantizations, check download access.

Plain Python over ``huggingface_hub`` (no Qt): call from a worker thread. Every call makes a single
request with no retry loop, so an offline machine gets ``HubUnreachableError`` at once instead of after
huggingface_hub's ~20 s of backoff; the caller decides whether to try again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import httpx2  # huggingface_hub's HTTP client: its transport errors mean "unreachable"
from huggingface_hub import HfApi, ModelInfo, constants
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from app.hub.errors import GatedRepoError, HubError, HubUnreachableError, RepoNotFoundError
from app.hub.quants import Quant, QuantFile, group_quants

REQUEST_TIMEOUT_S = 20.0
SearchSort = Literal["downloads", "likes", "last_modified", "trending_score", "created_at"]
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SORT_PARAM = {"last_modified": "lastModified", "trending_score": "trendingScore", "created_at": "createdAt"}


@dataclass(frozen=True)
class RepoSummary:
    """One search hit."""

    repo_id: str
    downloads: int
    likes: int
    last_modified: datetime | None
    gated: bool


def list_gguf_quants(repo_id: str, token: str | None = None, endpoint: str | None = None) -> list[Quant]:
    """The quantizations in a GGUF repo, smallest first, with each file's size and sha256.

    A gated repo's file list is public on the Hub, so this works without access; use
    ``check_download_access`` before downloading. ``token=None`` uses the saved login, if any.
    """
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(api.endpoint, repo_id, token):
        info = api.model_info(repo_id, files_metadata=True, timeout=REQUEST_TIMEOUT_S)
    files = [
        QuantFile(path=s.rfilename, size=s.size or 0, sha256=s.lfs.sha256 if s.lfs else None)
        for s in info.siblings or []
    ]
    return group_quants(files)


def check_download_access(repo_id: str, token: str | None = None, endpoint: str | None = None) -> None:
    """Return if this token may download the repo's files; raise ``GatedRepoError`` if it is gated for it."""
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(api.endpoint, repo_id, token):
        api.auth_check(repo_id)


def search_gguf_repos(
    query: str,
    sort: SearchSort = "downloads",
    limit: int = 20,
    token: str | None = None,
    endpoint: str | None = None,
) -> list[RepoSummary]:
    """GGUF model repos whose name contains ``query``, best first by ``sort``.

    The same request as ``HfApi.list_models(search=query, filter="gguf", sort=sort, limit=limit,
    expand=[...])``, made once: list_models retries a refused connection for ~20 s.
    """
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    params = {
        "search": query,
        "filter": "gguf",
        "sort": _SORT_PARAM.get(sort, sort),
        "limit": limit,
        "expand": ["downloads", "likes", "lastModified", "gated"],
    }
    with hub_errors(endpoint, None, token):
        response = get_session().get(
            f"{endpoint}/api/models",
            params=params,
            headers=build_hf_headers(token=token),
            timeout=REQUEST_TIMEOUT_S,
        )
        hf_raise_for_status(response)
        models = [ModelInfo(**item) for item in response.json()]
    return [
        RepoSummary(
            repo_id=m.id,
            downloads=m.downloads or 0,
            likes=m.likes or 0,
            last_modified=m.last_modified,
            gated=bool(m.gated),
        )
        for m in models
    ]


def parse_repo_id(text: str) -> str | None:
    """``owner/name`` from what a user pastes: the id itself or a Hub URL; None if it is neither.

    Accepts ``https://huggingface.co/owner/name``, its ``/tree/main/Q4_K_M`` or ``/blob/...`` pages,
    ``hf.co/owner/name``, and the same on another endpoint (``HF_ENDPOINT``).
    """
    text = text.strip().rstrip("/")
    is_url = bool(re.match(r"^https?://", text)) or text.startswith(("huggingface.co/", "hf.co/"))
    if is_url:
        text = re.sub(r"^(https?://)?[^/]+/?", "", text)
    parts = text.split("/")
    if len(parts) < 2 or (len(parts) > 2 and not is_url):
        return None
    owner, name = parts[0], parts[1]
    if not (_REPO_PART.fullmatch(owner) and _REPO_PART.fullmatch(name)):
        return None
    return f"{owner}/{name}"


@contextmanager
def hub_errors(endpoint: str, repo_id: str | None, token: str | None) -> Iterator[None]:
    """Turn huggingface_hub's and httpx's exceptions into MoE Desk's, which say what to do."""
    try:
        yield
    except hf_errors.GatedRepoError as error:  # before RepositoryNotFoundError: it is a subclass
        name = repo_id or "this repo"
        raise GatedRepoError(name, f"{endpoint}/{name}", had_token=bool(token)) from error
    except hf_errors.RepositoryNotFoundError as error:
        raise RepoNotFoundError(repo_id or "?") from error
    except hf_errors.HFValidationError as error:  # before any request: the name cannot be a repo
        raise HubError(f"'{repo_id}' is not a Hub repository id: they look like owner/model, e.g. "
                       "unsloth/Qwen3-30B-A3B-GGUF (a local model file must exist under that "
                       "path).") from error
    except (httpx2.TransportError, hf_errors.OfflineModeIsEnabled) as error:
        raise HubUnreachableError(endpoint, error) from error
    except hf_errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise HubError(
            f"The Hub at {endpoint} answered HTTP {status}: {error.server_message or error}"
        ) from error
