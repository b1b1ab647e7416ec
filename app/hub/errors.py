"""Errors a user can meet when talking to the Hub, each with its cause and what to do about it."""

from __future__ import annotations


class HubError(Exception):
    """Base class: the Hub answered with an error not covered below (the message says which)."""


class RepoNotFoundError(HubError):
    """No model repo of that name, or a private one the token cannot read."""

    def __init__(self, repo_id: str) -> None:
        super().__init__(
            f"No model repository '{repo_id}' on the Hub. Check the name (owner/model); "
            "if it is private, sign in with an access token that can read it."
        )
        self.repo_id = repo_id


class GatedRepoError(HubError):
    """A gated repo: its files need an access token of an account that was granted access."""

    def __init__(self, repo_id: str, repo_url: str, *, had_token: bool) -> None:
        if had_token:
            fix = f"this access token's account has not been granted access yet: ask for it at {repo_url}"
        else:
            fix = f"accept its conditions at {repo_url}, then sign in with an access token"
        super().__init__(f"'{repo_id}' is a gated model: {fix}.")
        self.repo_id = repo_id
        self.repo_url = repo_url
        self.had_token = had_token


class HubUnreachableError(HubError):
    """The Hub endpoint could not be reached (offline, DNS, firewall, proxy, timeout)."""

    def __init__(self, endpoint: str, cause: BaseException) -> None:
        super().__init__(
            f"Cannot reach the Hub at {endpoint} ({type(cause).__name__}: {cause}). "
            "Check the network connection, or a proxy or firewall; models already downloaded still work."
        )
        self.endpoint = endpoint
