"""Deciding, within seconds, whether the Hugging Face Hub can be used at all.

Without a network, `datasets` and `transformers` retry for minutes before failing. We check once,
up front, and fail with a message that names the local-file flag to use instead.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlparse

from utils.run.errors import HubUnavailableError

logger = logging.getLogger(__name__)

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_SECONDS = 3.0


def offline_mode_requested() -> bool:
    """True when the user set one of the Hugging Face offline variables (only the cache is used)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in OFFLINE_VARIABLES)


def hub_reachable(timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds.

    Name resolution can block far longer than a socket timeout, so the probe runs in a daemon
    thread and is abandoned when the time is up.
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    proxy = next((os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)), None)
    if proxy:
        # Behind a proxy the Hub is reached through it: the proxy is what must answer.
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 3128
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def require_hub(what: str, local_hint: str, *, probe: Callable[[], bool] = hub_reachable) -> None:
    """Fail fast unless `what` (a Hub dataset or model name) can be fetched.

    In offline mode (HF_HUB_OFFLINE=1 and friends) the caller goes on to the local cache, whose
    own miss is reported by the caller; otherwise the Hub must answer the probe.

    Raises:
        HubUnavailableError: the Hub cannot be reached; the message names `local_hint`.
    """
    if offline_mode_requested():
        return
    if not probe():
        raise HubUnavailableError(
            f"{what} is a Hugging Face Hub name, but the Hub cannot be reached from this machine. "
            f"Use local files instead: {local_hint}. (With a populated cache, set HF_HUB_OFFLINE=1 "
            f"to read it without a network.)")


def hub_load_failed(what: str, local_hint: str, error: BaseException) -> HubUnavailableError:
    """The error to raise when loading `what` from the Hub (or its cache, offline) failed."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    where = ("is not in the local Hugging Face cache and offline mode is on" if offline_mode_requested()
             else "could not be loaded from the Hugging Face Hub")
    return HubUnavailableError(f"{what} {where} ({type(error).__name__}: {first_line}). "
                               f"Use local files instead: {local_hint}.")
