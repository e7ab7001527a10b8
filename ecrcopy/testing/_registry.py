"""A real CNCF distribution (``docker-registry``) process for tests."""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ._httpserver import LoggedRequest, free_port
from ._service import LoopbackAddress, Service

if TYPE_CHECKING:
    from ._tokenserver import TokenServer

__all__ = ["Registry", "RegistryError", "blob_data_path"]

logger = logging.getLogger("ecrcopy.testing")

#: Query parameter marking the registry's own readiness and log-sync probes (hidden from requests()).
_PROBE = "ecrcopy-testing-probe"

# Apache combined log format as written by gorilla/handlers for distribution's access log:
# 127.0.0.1 - - [25/Nov/2026:23:21:09 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r'^(?P<host>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<target>\S+) (?P<proto>[^"]+)" '
    r"(?P<status>\d{3}) (?P<size>\d+|-)"
)
_UPLOAD_PUT = re.compile(r"^/v2/.+/blobs/uploads/[^/]+$")
_UPLOAD_POST = re.compile(r"^/v2/.+/blobs/uploads/?$")
_MANIFEST = re.compile(r"^/v2/.+/manifests/[^/]+$")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RegistryError(RuntimeError):
    """The registry process failed to start or died."""


def blob_data_path(data_dir: Path, digest: str) -> Path:
    """Path of a blob's bytes inside a distribution filesystem storage root."""
    algorithm, _, hexdigest = digest.partition(":")
    if not re.fullmatch(r"[a-z0-9]+", algorithm) or not re.fullmatch(r"[0-9a-f]{32,}", hexdigest):
        raise ValueError(f"not a digest: {digest!r}")
    return data_dir / "docker" / "registry" / "v2" / "blobs" / algorithm / hexdigest[:2] / hexdigest / "data"


def _htpasswd_line(user: str, password: str) -> str:
    try:
        import bcrypt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        out = subprocess.run(
            ["htpasswd", "-Bbn", "-C", "4", user, password],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.strip()
    hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))
    return f"{user}:{hashed.decode()}"


class Registry(LoopbackAddress, Service):
    """A ``docker-registry serve`` subprocess (CNCF distribution 2.8) on a free port of 127.0.0.1.

    Files in ``workdir``: ``config.yml`` (JSON, which is valid YAML), ``data/`` (filesystem storage
    root, see :attr:`data_dir`), ``access.log`` (the process's stdout: one Apache combined-format line
    per request, written by distribution after the handler returns), ``registry.log`` (stderr: logrus
    application log, :attr:`log_path`), ``htpasswd`` and ``token-root.pem`` when used.

    Options:

    * ``htpasswd={user: password}``: ``auth: htpasswd`` (bcrypt entries); the challenge is
      ``Basic realm="ecrcopy-test"``.
    * ``token_auth=TokenServer``: ``auth: token`` with that server's realm, service, issuer and
      certificate. The token server must be started first. distribution accepts a token up to 60 s after
      its ``exp`` (leeway) -- put a :class:`~ecrcopy.testing.Proxy` with ``token_gate=True`` in front to
      get GitLab's hard expiry.
    * ``relative_urls=True``: ``http.relativeurls``; upload ``Location`` headers are then paths such as
      ``/v2/<name>/blobs/uploads/<uuid>?_state=...`` (the blob PUT's 201 ``Location`` is relative too).
    * ``redirect_blobs_to=URL``: storage middleware ``redirect`` with ``baseurl: URL``. Blob GETs *and
      HEADs* then answer ``307`` with ``Location: <scheme://host of URL>/docker/registry/v2/blobs/sha256/
      <2 hex>/<hex>/data`` -- distribution 2.8 replaces the URL's path, so any path in ``URL`` is
      dropped -- and the 307 carries no ``Docker-Content-Digest`` and (for HEAD) no ``Content-Length``.
      Serve those files with :class:`~ecrcopy.testing.BlobServer` over :attr:`data_dir`.

    The constructor writes nothing; :meth:`start` (or ``with``) writes the config and launches the
    process, waiting until ``GET /v2/`` answers 200 or 401.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        htpasswd: dict[str, str] | None = None,
        token_auth: TokenServer | None = None,
        relative_urls: bool = False,
        redirect_blobs_to: str | None = None,
        startup_timeout: float = 20.0,
        token_realm: str | None = None,
    ) -> None:
        if htpasswd is not None and token_auth is not None:
            raise ValueError("choose htpasswd or token_auth, not both")
        if token_realm is not None and token_auth is None:
            raise ValueError("token_realm needs token_auth")
        self.workdir = Path(workdir)
        self.htpasswd = dict(htpasswd) if htpasswd is not None else None
        self.token_auth = token_auth
        self.token_realm = token_realm
        self.relative_urls = relative_urls
        self.redirect_blobs_to = redirect_blobs_to
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_offset = 0
        self._probe_counter = itertools.count()

    # -- paths and addresses -------------------------------------------------------------------------

    @staticmethod
    def data_dir_for(workdir: Path) -> Path:
        """The storage root a ``Registry(workdir)`` will use (to build a BlobServer before it)."""
        return Path(workdir) / "data"

    @property
    def data_dir(self) -> Path:
        """Filesystem storage root (``workdir/data``); blobs live under ``docker/registry/v2/blobs``."""
        return self.data_dir_for(self.workdir)

    @property
    def config_path(self) -> Path:
        """The generated ``config.yml``."""
        return self.workdir / "config.yml"

    @property
    def log_path(self) -> Path:
        """The application log (the process's stderr)."""
        return self.workdir / "registry.log"

    @property
    def access_log_path(self) -> Path:
        """The access log (the process's stdout)."""
        return self.workdir / "access.log"

    @property
    def port(self) -> int:
        """The TCP port (only after start)."""
        if self._port is None:
            raise RuntimeError("Registry is not started")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def blob_path(self, digest: str) -> Path:
        """Where the registry stores the bytes of ``digest``."""
        return blob_data_path(self.data_dir, digest)

    # -- lifecycle -----------------------------------------------------------------------------------

    def _config(self, port: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{port}",
                "secret": secrets.token_hex(16),
                "relativeurls": self.relative_urls,
            },
        }
        if self.htpasswd is not None:
            path = self.workdir / "htpasswd"
            lines = [_htpasswd_line(user, pw) for user, pw in self.htpasswd.items()]
            path.write_text("".join(line + "\n" for line in lines))
            config["auth"] = {"htpasswd": {"realm": "ecrcopy-test", "path": str(path)}}
        if self.token_auth is not None:
            ts = self.token_auth
            bundle = self.workdir / "token-root.pem"
            bundle.write_bytes(ts.cert_pem)
            config["auth"] = {
                "token": {
                    "realm": self.token_realm if self.token_realm is not None else ts.realm,
                    "service": ts.service,
                    "issuer": ts.issuer,
                    "rootcertbundle": str(bundle),
                }
            }
        if self.redirect_blobs_to is not None:
            config["middleware"] = {"storage": [{"name": "redirect", "options": {"baseurl": self.redirect_blobs_to}}]}
        return config

    def start(self) -> Self:
        """Write the config, launch the process and wait until ``/v2/`` answers.

        Retries on another free port when the chosen one was taken meanwhile. Raises
        :class:`RegistryError` with the log tail when the process exits or does not become ready.
        """
        if self._proc is not None:
            raise RuntimeError("Registry already started")
        if shutil.which("docker-registry") is None:
            raise RegistryError("docker-registry binary not found on PATH")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error: RegistryError | None = None
        for _attempt in range(5):
            try:
                self._launch(free_port())
                return self
            except _PortTaken as exc:
                last_error = RegistryError(str(exc))
        assert last_error is not None
        raise last_error

    def _launch(self, port: int) -> None:
        self.config_path.write_text(json.dumps(self._config(port), indent=2))
        # Fresh logs per launch: keeps requests() and log tails about this process only.
        with open(self.access_log_path, "wb") as out, open(self.log_path, "wb") as err:
            proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.workdir,
            )
        self._proc = proc
        self._port = port
        self._log_offset = 0
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = proc.poll()
            if code is not None:
                tail = self.log_tail()
                self._proc = None
                self._port = None
                proc.wait()
                if "address already in use" in tail:
                    raise _PortTaken(f"port {port} taken:\n{tail}")
                raise RegistryError(f"docker-registry exited with {code} during start-up:\n{tail}")
            status = self._probe_status()
            if status in (200, 401):
                logger.debug("registry ready on %s (pid %s)", self.url, proc.pid)
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RegistryError(f"docker-registry not ready after {self.startup_timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def _probe_status(self) -> int | None:
        """``GET /v2/?<probe>`` status, or None when nothing answers yet."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", f"/v2/?{_PROBE}={next(self._probe_counter)}")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except OSError:
            return None
        finally:
            conn.close()

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        logger.debug("registry on port %s stopped", self._port)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the application log and of the access log."""
        parts = []
        for path in (self.log_path, self.access_log_path):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            parts.append(f"--- {path.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    # -- access log ----------------------------------------------------------------------------------

    def _sync_log(self, timeout: float = 5.0) -> None:
        """Make sure every request answered so far is in the access log.

        distribution writes the access line after its handler returns, which can be a moment after the
        client saw the whole response. We send a probe request and wait until *its* line appears;
        lines are written in completion order, so earlier requests are in by then.
        """
        if not self.running:
            return
        marker = f"{_PROBE}={next(self._probe_counter)}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", f"/v2/?{marker}")
            conn.getresponse().read()
        finally:
            conn.close()
        deadline = time.monotonic() + timeout
        needle = f"GET /v2/?{marker} ".encode()
        while needle not in self.access_log_path.read_bytes():
            if time.monotonic() > deadline:
                raise RegistryError("access log did not catch up with a probe request")
            time.sleep(0.005)

    def requests(self) -> list[LoggedRequest]:
        """Every request in the access log since start (or :meth:`reset`), in completion order.

        Readiness/sync probes of this class are left out. Lines that do not parse are skipped.
        """
        self._sync_log()
        data = self.access_log_path.read_bytes()[self._log_offset :]
        result = []
        for raw in data.decode("utf-8", errors="replace").splitlines():
            match = _ACCESS_LINE.match(raw)
            if match is None:
                continue
            path, _, query = match["target"].partition("?")
            if _PROBE in query:
                continue
            result.append(LoggedRequest(match["method"], path, query, int(match["status"])))
        return result

    def reset(self) -> None:
        """Make :meth:`requests` (and the counters) forget everything logged so far."""
        self._sync_log()
        self._log_offset = self.access_log_path.stat().st_size

    def blob_uploads(self) -> int:
        """Number of completed blob uploads: ``PUT /v2/<name>/blobs/uploads/<uuid>?...`` answered 201.

        Cross-repository mounts (POST answered 201) are not uploads and are counted by :meth:`mounts`;
        PATCHes of chunked uploads are not counted separately (a chunked upload counts once, at its PUT).
        """
        return sum(1 for r in self.requests() if r.method == "PUT" and r.status == 201 and _UPLOAD_PUT.match(r.path))

    def manifest_puts(self) -> list[LoggedRequest]:
        """``PUT /v2/<name>/manifests/<tag or digest>`` answered 2xx (by tag and by digest alike)."""
        return [r for r in self.requests() if r.method == "PUT" and 200 <= r.status < 300 and _MANIFEST.match(r.path)]

    def mounts(self) -> list[LoggedRequest]:
        """Successful cross-repository mounts: ``POST /v2/<name>/blobs/uploads/?mount=...`` answered 201.

        A mount request answered 202 (not mounted, upload session opened instead) is not included.
        """
        return [
            r
            for r in self.requests()
            if r.method == "POST"
            and r.status == 201
            and _UPLOAD_POST.match(r.path)
            and any(p.startswith("mount=") for p in r.query.split("&"))
        ]

    def writes(self) -> list[LoggedRequest]:
        """Every POST, PUT, PATCH or DELETE, whatever its status (401s and failures included)."""
        return [r for r in self.requests() if r.method in _WRITE_METHODS]


class _PortTaken(Exception):
    pass
