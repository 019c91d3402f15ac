"""Is a model name a local directory or a Hub id, and can the Hub be reached?

A name that is not a local directory goes to the Hugging Face Hub, where transformers retries each
request for about a minute before it gives up when there is no network. `check_model_source`
decides at once instead: a name that looks like a path (absolute, `./`, `../`, `~`, not exactly
one `/`, or one whose first part is a local directory, such as `runs/modle`) and does not exist is
a missing directory; a Hub id that is not in the local cache, with `HF_HUB_OFFLINE` set or the
Hub's host refusing a connection within `CONNECT_TIMEOUT_S`, is an error that says so.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from r1kit.errors import R1kitError

CONNECT_TIMEOUT_S = 3.0
"""How long the Hub's host may take to accept a connection before it counts as unreachable."""


def looks_like_path(name: str) -> bool:
    """A name meant as a local path rather than a Hub id (`owner/name`)."""
    first = name.split("/", 1)[0]
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or "\\" in name
        or name.count("/") != 1
        or Path(first).is_dir()  # `runs/modle`: a typo under an existing folder, not a Hub owner
    )


def hub_unreachable() -> str:
    """Why the Hub cannot be reached ('' when it can, or when a proxy makes that unknowable here)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if urllib.request.getproxies().get("https"):
        return ""  # requests go through the proxy; let the download itself find out
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        return f"{host}:{port} did not answer ({e.strerror or type(e).__name__})"
    return ""


def cached(repo_id: str) -> bool:
    """Whether the model's config.json is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def check_model_source(name: str, key: str = "model.path") -> None:
    """An R1kitError naming `key` when `name` is neither an existing local path nor a Hub id that
    can be loaded: a missing directory, or a Hub id with the Hub out of reach and no cached copy."""
    if Path(name).exists():
        return
    if looks_like_path(name):
        raise R1kitError(f"model directory {name!r} does not exist; check {key}")
    if cached(name):
        return
    why = hub_unreachable()
    if why:
        raise R1kitError(f"{key} {name!r} is not a local path, and the Hub is unreachable ({why}); check the path, or connect and retry")
