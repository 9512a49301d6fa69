"""Can a hub id be fetched? One quick request before transformers or datasets try.

Without it, an unreachable Hub surfaces only after huggingface_hub's download retries
(about a minute per file) as a multi-line error. Here one request with a short timeout
decides: reachable, go on; unreachable but the repo is in the local cache, switch to
offline mode and use the cache; otherwise one line naming the endpoint. Local paths and
builtin models are never checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from basealign.errors import BasealignError

PROBE_TIMEOUT_S = 10


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the endpoint could not be reached at all."""
    try:  # the HTTP client huggingface_hub uses; its transport errors are connection failures
        from httpx2 import TransportError

        return (TransportError, ConnectionError, TimeoutError)
    except ImportError:
        return (ConnectionError, TimeoutError)


def _in_cache(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import constants

    folder = f"{repo_type}s--{repo_id.replace('/', '--')}"
    return (Path(constants.HF_HUB_CACHE) / folder / "snapshots").is_dir()


def _go_offline() -> None:
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"  # read by datasets and transformers in this process
    constants.HF_HUB_OFFLINE = True


def require_hub_repo(name: str, revision: str | None = None, repo_type: str = "model", what: str = "model") -> None:
    """BasealignError (one line) unless NAME is local, or a hub repo that is reachable or cached."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from basealign.models.loading import looks_local
    from basealign.models.tiny import BUILTIN_PREFIX

    if name.startswith(BUILTIN_PREFIX) or looks_local(name):
        return
    cached = _in_cache(name, repo_type)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return
        raise BasealignError(f"{what} {name} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    url = endpoint()
    try:
        HfApi(endpoint=url).repo_info(name, repo_type=repo_type, revision=revision, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        raise BasealignError(f"{what} {name} is gated: accept its terms on {url}/{name} and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise BasealignError(f"{what} {name} has no revision {revision!r} on {url}") from None
    except RepositoryNotFoundError:
        raise BasealignError(f"{what} {name} not found on {url} (or private: set HF_TOKEN)") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "an error"
        raise BasealignError(f"the Hub at {url} answered {status} for {what} {name}") from None
    except unreachable_errors() as err:
        if not cached:
            raise BasealignError(f"cannot reach the Hub at {url} to fetch {what} {name} ({type(err).__name__}); "
                                 "check the network or HF_ENDPOINT, or give a local folder") from None
        print(f"basealign: the Hub at {url} is unreachable; using the cached {name} (offline mode)")
        _go_offline()
