"""Download and verify single files from the Hugging Face hub (the `hf-hub:` source and timm use it).

Files come through ``huggingface_hub``'s own download and cache.

Why not let timm download invisibly: a survey must record *which* bytes it measured. Here every
file is fetched explicitly, so we know the commit it came from and can check its sha256 against
the hash the hub publishes for LFS files (the ``X-Linked-Etag``) before anything loads it.

The environment is read at call time, not import time, so ``--offline`` and tests can change it:
``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_HUB_OFFLINE``. A token is never handled here:
``huggingface_hub`` reads it from ``HF_TOKEN`` or the login file and sends it in a header; it is
not printed, logged or returned.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CorruptWeightsError, FetchError, OfflineCacheMissError, TransientFetchError, one_line
from pipeline.sources.base import sha256_file
from pipeline.sources.retry import RetryPolicy, Transient, retry_call

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # safetensors first: no pickle at all
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubFile:
    """One file resolved in the local hub cache: where it is and exactly which version it is."""

    repo_id: str
    filename: str
    path: str
    revision: str  # the commit hash the file belongs to
    sha256: str
    size: int

def is_offline() -> bool:
    """Offline when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def set_offline(offline: bool = True) -> None:
    """Turn offline mode on for this process and its children (what ``--offline`` does)."""
    os.environ["HF_HUB_OFFLINE"] = "1" if offline else "0"
    _sync_hf_offline()


def _sync_hf_offline() -> None:
    """``huggingface_hub`` reads HF_HUB_OFFLINE once at import; keep it in step with the environment."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = is_offline()


def hub_cache_dir() -> Path:
    """``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (the hub's own order)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def split_repo_revision(text: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``."""
    repo, sep, revision = text.partition("@")
    return repo, (revision or None) if sep else None


class MissingFile(FetchError):
    """The repository exists but has no such file (lets callers fall back to another file name)."""


def fetch_file(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    *,
    policy: RetryPolicy | None = None,
) -> HubFile:
    """Make sure ``repo_id/filename`` at ``revision`` is in the hub cache, verified; return where it is.

    Online: one metadata request tells the commit and the published hash; the download goes
    through ``hf_hub_download`` pinned to that commit; an LFS file whose sha256 differs from the
    published one is deleted and fetched again. Offline: the cache only, with a clear error on a miss.
    """
    what = f"hf-hub:{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    _sync_hf_offline()
    if is_offline():
        return _from_cache_offline(repo_id, filename, revision, what)
    policy = policy or RetryPolicy.from_env()

    def give_up(message: str, last: Transient) -> FetchError:
        return CorruptWeightsError(message) if last.corrupt else TransientFetchError(message)

    force = {"download": False}

    def step(attempt: int) -> HubFile:
        try:
            return _fetch_once(repo_id, filename, revision, policy, force_download=force["download"])
        except Transient as exc:
            if exc.corrupt:
                force["download"] = True
            raise
        except Exception as exc:
            classified = _classify(exc, what)
            if classified is exc:
                raise
            raise classified from exc

    return retry_call(step, what=what, policy=policy, give_up=give_up)


def fetch_weight_file(
    repo_id: str,
    revision: str | None = None,
    filenames: tuple[str, ...] = WEIGHT_FILES,
    *,
    policy: RetryPolicy | None = None,
) -> HubFile:
    """The first of ``filenames`` the repository has (safetensors preferred)."""
    missing: list[str] = []
    for name in filenames:
        try:
            return fetch_file(repo_id, name, revision, policy=policy)
        except (MissingFile, OfflineCacheMissError) as exc:
            missing.append(name)
            last = exc
    if is_offline():
        raise OfflineCacheMissError(
            f"hf-hub:{repo_id}: offline and none of {', '.join(missing)} is in the cache {hub_cache_dir()}; "
            "run once online (unset HF_HUB_OFFLINE) to fetch it"
        ) from last
    raise FetchError(f"hf-hub:{repo_id}: the repository has none of {', '.join(missing)}") from last


def _fetch_once(
    repo_id: str, filename: str, revision: str | None, policy: RetryPolicy, *, force_download: bool
) -> HubFile:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    cache = hub_cache_dir()
    endpoint = hub_endpoint()
    published: str | None = None
    if revision and _COMMIT.fullmatch(revision) and not force_download:
        # A commit is immutable: a cached copy needs no request at all.
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
        if isinstance(cached, str):
            return _verified(repo_id, filename, cached, revision, published, delete_on_mismatch=True)
    # One metadata request, no retries inside huggingface_hub: our loop owns the retry policy.
    url = hf_hub_url(repo_id, filename, revision=revision or "main", endpoint=endpoint)
    meta = get_hf_file_metadata(url, timeout=policy.timeout, endpoint=endpoint, retry_on_errors=False)
    if not meta.commit_hash:
        raise FetchError(f"{endpoint} sent no X-Repo-Commit header: HF_ENDPOINT does not look like a Hugging Face hub")
    published = meta.etag if meta.etag and _SHA256.fullmatch(meta.etag) else None
    path = hf_hub_download(
        repo_id,
        filename,
        revision=meta.commit_hash,
        cache_dir=str(cache),
        endpoint=endpoint,
        force_download=force_download,
        etag_timeout=policy.timeout,
    )
    file = _verified(repo_id, filename, str(path), meta.commit_hash, published, delete_on_mismatch=True)
    _remember_ref(cache, repo_id, revision or "main", meta.commit_hash)
    return file


def _remember_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    """Record ``refs/<revision>`` -> commit, as hf_hub_download does for a branch, so offline use finds it.

    (We download pinned to the commit, so huggingface_hub itself does not write the branch ref.)
    """
    from huggingface_hub.file_download import repo_folder_name

    if revision == commit:
        return
    ref = cache / repo_folder_name(repo_id=repo_id, repo_type="model") / "refs" / revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text() != commit:
            tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
            tmp.write_text(commit)
            tmp.replace(ref)
    except OSError as exc:  # a read-only cache still serves the file we just verified
        log.warning("could not record refs/%s for %s: %s", revision, repo_id, exc)


def _verified(
    repo_id: str, filename: str, path: str, commit: str, published: str | None, *, delete_on_mismatch: bool
) -> HubFile:
    """Hash the file; for an LFS file compare with the published sha256 (the blob is named by it)."""
    blob = Path(os.path.realpath(path))
    expected = published or (blob.name if _SHA256.fullmatch(blob.name) else None)
    digest = sha256_file(blob)
    if expected is not None and digest != expected:
        reason = f"sha256 of the downloaded file is {digest[:12]}…, the hub published {expected[:12]}…"
        if delete_on_mismatch:
            for stale in {Path(path), blob}:
                stale.unlink(missing_ok=True)
            raise Transient(reason + " (deleted; fetching again)", corrupt=True)
        raise CorruptWeightsError(f"hf-hub:{repo_id}/{filename}: {reason}")
    return HubFile(repo_id, filename, str(path), commit, digest, blob.stat().st_size)


def _from_cache_offline(repo_id: str, filename: str, revision: str | None, what: str) -> HubFile:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    cache = hub_cache_dir()
    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision or "main")
    if not isinstance(found, str):
        raise OfflineCacheMissError(
            f"{what}: offline (HF_HUB_OFFLINE=1) and not in the cache {cache}; run once online to fetch it"
        )
    snapshots = cache / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
    commit = Path(found).relative_to(snapshots).parts[0]
    file = _verified(repo_id, filename, found, commit, None, delete_on_mismatch=False)
    return file


def _classify(exc: Exception, what: str) -> Exception:
    """Map a ``huggingface_hub`` / ``httpx`` failure to :class:`Transient` or a one-line permanent error."""
    import httpx2
    from huggingface_hub.errors import (
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, GatedRepoError):
        return FetchError(
            f"{what}: gated repository; accept its terms on the hub and log in (HF_TOKEN or `hf auth login`)"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return FetchError(
            f"{what}: no such repository on {hub_endpoint()} (or it is private and no valid token is set)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return FetchError(f"{what}: no such revision")
    if isinstance(exc, RemoteEntryNotFoundError):
        return MissingFile(f"{what}: no such file in the repository")
    if isinstance(exc, OfflineModeIsEnabled):
        return OfflineCacheMissError(f"{what}: offline mode is on and the file is not cached")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in _TRANSIENT_STATUS:
            return Transient(f"HTTP {status} from the hub", retry_after=_retry_after(exc.response.headers))
        if status in (401, 403):
            return FetchError(f"{what}: access denied (HTTP {status}); check the token's permissions")
        return FetchError(f"{what}: HTTP {status} from the hub")
    if isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)):
        return Transient(f"network error ({type(exc).__name__})")
    if isinstance(exc, FileMetadataError):
        return FetchError(f"{what}: {one_line(exc)}")
    if isinstance(exc, LocalEntryNotFoundError):
        # Raised online when huggingface_hub's own metadata request failed on a connection problem.
        return Transient("the hub could not be reached")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return Transient("download was truncated (size differs from the published size)")
    if isinstance(exc, OSError):
        return FetchError(f"{what}: {type(exc).__name__}: {one_line(exc)}")
    return exc


def _retry_after(headers) -> float | None:
    """Seconds the hub asked us to wait: ``RateLimit`` (``t=`` when ``r=0``) or ``Retry-After``."""
    from huggingface_hub.utils import parse_ratelimit_headers

    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        return float(info.reset_in_seconds)
    value = (headers.get("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None
