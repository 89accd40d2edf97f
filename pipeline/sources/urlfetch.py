"""Weight files from a plain URL into torch's hub cache (``$TORCH_HOME/hub/checkpoints``).

Used by torchvision weights and by the few timm weights that live only at a URL. The file name
of torchvision (and old timm) weights carries the first hex digits of its sha256
(``mobilenet_v2-7ebf99e0.pth``). Policy, as documented in docs/sources.md:

- a file we download is checked against that prefix; a mismatch is deleted and fetched again;
- a file already in the cache is used as it is, like torchvision does (``check_hash=False``);
  its real sha256 is recorded, and a prefix mismatch is logged, so a replaced file is visible.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

from pipeline.errors import CorruptWeightsError, FetchError, OfflineCacheMissError, TransientFetchError
from pipeline.sources.base import sha256_file
from pipeline.sources.hub_download import is_offline
from pipeline.sources.retry import RetryPolicy, Transient, retry_call

log = logging.getLogger(__name__)

_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,64})\.")


def torch_checkpoint_dir() -> Path:
    """Where torch keeps downloaded checkpoints; follows ``TORCH_HOME`` at call time."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hash_prefix(filename: str) -> str | None:
    """The sha256 prefix torchvision puts in its file names, if any."""
    match = _HASH_PREFIX.search(filename)
    return match.group(1) if match else None


def fetch_url(url: str, *, policy: RetryPolicy | None = None) -> dict[str, object]:
    """Make sure the file at ``url`` is in the torch cache; return ``path``, ``sha256``, ``size``."""
    filename = os.path.basename(urlparse(url).path)
    dest = torch_checkpoint_dir() / filename
    prefix = hash_prefix(filename)
    if dest.is_file():
        digest = sha256_file(dest)
        if prefix and not digest.startswith(prefix):
            log.warning(
                "%s: cached file's sha256 %s does not start with %s (not the published file)", dest, digest[:12], prefix
            )
        return {"path": str(dest), "sha256": digest, "size": dest.stat().st_size, "url": url}
    if is_offline():
        raise OfflineCacheMissError(f"{url}: offline and not in the cache {dest.parent}; run once online to fetch it")

    def step(attempt: int) -> dict[str, object]:
        import torch.hub

        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(dest), hash_prefix=prefix, progress=False)
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
                raise Transient(f"HTTP {exc.code}", retry_after=wait) from None
            raise FetchError(f"{url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise Transient(f"network error ({type(exc).__name__})") from None
        except RuntimeError as exc:
            if "invalid hash value" in str(exc):
                raise Transient("downloaded file does not match the sha256 in its name", corrupt=True) from None
            raise
        return {"path": str(dest), "sha256": sha256_file(dest), "size": dest.stat().st_size, "url": url}

    def give_up(message: str, last: Transient) -> FetchError:
        return CorruptWeightsError(message) if last.corrupt else TransientFetchError(message)

    return retry_call(step, what=url, policy=policy, give_up=give_up)
