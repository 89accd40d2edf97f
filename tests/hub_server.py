"""A stand-in Hugging Face hub on 127.0.0.1 for tests: real HTTP, real ``huggingface_hub`` client.

It answers what ``huggingface_hub`` 2.4 asks when downloading a file:

- ``HEAD /ORG/NAME/resolve/REV/FILE``: ``X-Repo-Commit``, ``ETag`` and, for LFS files
  (weights), ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``; 404s carry ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) as the hub's do;
- ``GET`` of the same URL, honouring ``Range`` (the client resumes dropped downloads);
- ``GET /api/models/ORG/NAME[/revision/REV]``: ``{"id", "sha", "siblings"}``.

Faults are queued per test (:meth:`StandInHub.fault`) and used up in order by matching
requests: an HTTP status with headers (429 + Retry-After, 503), a connection dropped mid-body,
a truncated body, corrupted bytes of the right length, a slow link. Every request is logged
(method, path, Range, whether an Authorization header came) so tests can count retries.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]
    gated: bool = False


@dataclass
class Fault:
    kind: str  # status | drop | truncate | corrupt | slow
    method: str | None = None  # HEAD / GET / None for both
    path_contains: str = ""
    times: int = 1
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 1024  # bytes sent before a drop / kept by a truncation
    delay: float = 0.0  # seconds between chunks (slow)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorized: bool


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file: what the hub sends as the ETag of a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandInHub:
    """Start with :meth:`start`, point ``HF_ENDPOINT`` at :attr:`url`, stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    # --- content -------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], *, gated: bool = False) -> str:
        """Publish files under ``repo_id``; returns the commit hash (derived from the contents)."""
        data = {name: (Path(v).read_bytes() if isinstance(v, Path) else v) for name, v in files.items()}
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(data):
            digest.update(name.encode() + hashlib.sha256(data[name]).digest())
        self.repos[repo_id] = Repo(commit=digest.hexdigest(), files=data, gated=gated)
        return self.repos[repo_id].commit

    def fault(self, kind: str, **kwargs) -> Fault:
        """Queue a fault; it applies to the next ``times`` matching requests."""
        fault = Fault(kind=kind, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(self, method: str, path_contains: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and path_contains in r.path)

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandInHub:
        hub = self

        class Handler(_Handler):
            stand_in = hub

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method in (None, method) and fault.path_contains in path:
                    fault.times -= 1
                    return fault
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    stand_in: StandInHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # --- routing -------------------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        hub = self.stand_in
        path = self.path.split("?", 1)[0]
        hub.requests.append(Request(self.command, path, self.headers.get("Range"), "Authorization" in self.headers))
        fault = hub._take_fault(self.command, path)
        if fault is not None and fault.kind == "status":
            self._reply(fault.status, b"", {**fault.headers, "X-Error-Message": "injected fault"}, body)
            return
        if path.startswith("/api/models/"):
            self._api(path[len("/api/models/") :], body)
            return
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self._reply(404, b"not found", {}, body)
            return
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = hub.repos.get(repo_id)
        if repo is None:
            self._reply(404, b"", {"X-Error-Code": "RepoNotFound"}, body)
            return
        if repo.gated and "Authorization" not in self.headers:
            self._reply(403, b"", {"X-Error-Code": "GatedRepo"}, body)
            return
        if revision not in ("main", repo.commit):
            self._reply(404, b"", {"X-Error-Code": "RevisionNotFound"}, body)
            return
        data = repo.files.get(filename)
        if data is None:
            self._reply(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}, body)
            return
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        self._send_file(data, headers, body, fault)

    def _api(self, rest: str, body: bool) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self.stand_in.repos.get(repo_id)
        if repo is None:
            self._reply(404, b"", {"X-Error-Code": "RepoNotFound"}, body)
            return
        if revision and revision not in ("main", repo.commit):
            self._reply(404, b"", {"X-Error-Code": "RevisionNotFound"}, body)
            return
        info = {"id": repo_id, "sha": repo.commit, "siblings": [{"rfilename": n} for n in sorted(repo.files)]}
        self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    # --- responses -----------------------------------------------------------------------------
    def _reply(self, status: int, payload: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body and payload:
            self.wfile.write(payload)

    def _send_file(self, data: bytes, headers: dict[str, str], body: bool, fault: Fault | None) -> None:
        start = 0
        status = 200
        range_header = self.headers.get("Range")
        if body and range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes=") :].split("-", 1)[0] or 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        chunk = data[start:]
        length = len(chunk)
        if fault is not None and fault.kind == "truncate" and body:
            chunk = chunk[: fault.after]
            length = len(chunk)  # a consistent but short answer, as from a broken proxy
        if fault is not None and fault.kind == "corrupt" and body:
            chunk = bytes(b ^ 0xFF for b in chunk[:64]) + chunk[64:]  # same length, wrong bytes
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not body:
            return
        if fault is not None and fault.kind == "drop":
            self.wfile.write(chunk[: fault.after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the peer sees the connection end mid-body
            return
        if fault is not None and fault.kind == "slow":
            step = max(1, len(chunk) // 8)
            for i in range(0, len(chunk), step):
                self.wfile.write(chunk[i : i + step])
                self.wfile.flush()
                time.sleep(fault.delay)
            return
        self.wfile.write(chunk)
