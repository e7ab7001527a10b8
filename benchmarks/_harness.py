"""Orchestrator-side plumbing of ``bench_ecr.py``: server processes, measured runs, logs, checks, tables.

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psutil  # type: ignore[import-untyped, unused-ignore]

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
#: Sampling period of the tools' VmHWM.
SAMPLE_PERIOD = 0.01
#: Processes this orchestrator started and has not reaped yet (killed on the way out).
_RUNNING: set[subprocess.Popen[bytes]] = set()


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- server processes --------------------------------------------------------------------------------


class ServerError(RuntimeError):
    """A command failed in a server process (the message has its traceback)."""


class ServerProcess:
    """``benchmarks/_server.py`` as a child in its own session, driven by one JSON line per command."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._proc: subprocess.Popen[str] | None = None
        self.pid = 0

    def start(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            [sys.executable, str(HERE / "_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # a Ctrl-C reaches the orchestrator only; it stops us in order
            cwd=HERE,
        )
        hello = self._read()
        self.pid = int(hello["pid"])
        return self

    def _read(self) -> Any:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise ServerError(f"{self.role} server exited (status {self._proc.poll()})")
        reply = json.loads(line)
        if not reply["ok"]:
            raise ServerError(f"{self.role} server: {reply['error']}\n{reply.get('traceback', '')}")
        return reply["result"]

    def call(self, command: str, **args: Any) -> Any:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise ServerError(f"{self.role} server is not running")
        proc.stdin.write(json.dumps({"cmd": command, "args": args}) + "\n")
        proc.stdin.flush()
        return self._read()

    def cpu_seconds(self) -> float:
        """user+sys of this process (all threads), of its live descendants (the registries) and of its
        reaped children, from ``/proc/<pid>/stat`` (10 ms ticks)."""
        process = psutil.Process(self.pid)
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                t = child.cpu_times()
                total += t.user + t.system
        return float(total)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for child in descendants:  # registries left behind by a server that did not stop them
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running():
                    child.terminate()
        if proc.stdout is not None:
            proc.stdout.close()


# -- measured runs -----------------------------------------------------------------------------------


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]
    label: str = ""


@dataclass
class ProcResult:
    label: str
    returncode: int
    wall: float
    peak_rss_mb: float
    stderr_tail: str
    stdout_path: str


@dataclass
class Measured:
    wall: float
    client_cpu: float
    server_cpu: dict[str, float]
    peak_rss_mb: float
    procs: list[ProcResult]
    ok: bool
    #: user+sys of this orchestrator during the run (sampling, polling): not in any column
    harness_cpu: float = 0.0

    @property
    def server_cpu_total(self) -> float:
        return sum(self.server_cpu.values())


def hwm_mb(pid: int) -> float | None:
    """Peak RSS of a running program image (VmHWM), in MB; None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    commands: Sequence[Command],
    *,
    servers: Sequence[ServerProcess],
    logdir: Path,
    parallel: bool = False,
    timeout: float = 3600.0,
) -> Measured:
    """Run ``commands`` one after another (or all at once with ``parallel``) and measure them.

    * wall: from the first start to the last exit;
    * client CPU: user+sys of the commands' process trees (``getrusage(RUSAGE_CHILDREN)`` delta; the
      server processes are children too, but they are not reaped during the run, so not counted);
    * server CPU: per server process, :meth:`ServerProcess.cpu_seconds` after minus before;
    * peak RSS: the largest VmHWM sampled every 10 ms from ``/proc/<pid>/status`` (``ru_maxrss``
      would also count this forking process's pages).

    A command that runs longer than ``timeout`` seconds is killed and counts as failed.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    queue = list(enumerate(commands))
    running: dict[int, tuple[subprocess.Popen[bytes], float, Any, Any]] = {}
    peaks: dict[int, float] = {}
    results: dict[int, ProcResult] = {}
    cpu_before = {s.role: s.cpu_seconds() for s in servers}
    client_before = _children_cpu()
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()

    def launch(n: int, command: Command) -> None:
        out = open(logdir / f"{n:03d}.out", "wb")  # noqa: SIM115 - closed when the process is reaped
        err = open(logdir / f"{n:03d}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen(command.argv, env=command.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _RUNNING.add(proc)
        running[n] = (proc, time.perf_counter(), out, err)
        peaks[n] = 0.0

    try:
        while queue or running:
            while queue and (parallel or not running):
                n, command = queue.pop(0)
                launch(n, command)
            for n, (proc, started, out, err) in list(running.items()):
                hwm = hwm_mb(proc.pid)
                if hwm is not None:
                    peaks[n] = max(peaks[n], hwm)
                code = proc.poll()
                if code is None and time.perf_counter() - started > timeout:
                    proc.kill()
                    code = proc.wait()
                    progress(f"{commands[n].label or commands[n].argv[0]}: killed after {timeout:.1f} s")
                if code is None:
                    continue
                ended = time.perf_counter()
                _RUNNING.discard(proc)
                out.close()
                err.close()
                del running[n]
                tail = ""
                if code != 0:
                    tail = (logdir / f"{n:03d}.err").read_text(errors="replace")[-1500:]
                results[n] = ProcResult(
                    commands[n].label, code, ended - started, peaks[n], tail, str(logdir / f"{n:03d}.out")
                )
            if running:
                time.sleep(SAMPLE_PERIOD)
    finally:
        for proc, _, out, err in running.values():
            proc.kill()
            proc.wait()
            _RUNNING.discard(proc)
            out.close()
            err.close()
    wall = time.perf_counter() - start
    client_cpu = _children_cpu() - client_before
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    harness_cpu = (self_after.ru_utime - self_before.ru_utime) + (self_after.ru_stime - self_before.ru_stime)
    server_cpu = {s.role: s.cpu_seconds() - cpu_before[s.role] for s in servers}
    procs = [results[n] for n in sorted(results)]
    for p in procs:
        if p.returncode != 0:
            progress(f"FAILED ({p.returncode}) {p.label}: {p.stderr_tail.strip()[-800:]}")
    return Measured(
        wall=wall,
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        peak_rss_mb=max((p.peak_rss_mb for p in procs), default=0.0),
        procs=procs,
        ok=all(p.returncode == 0 for p in procs) and len(procs) == len(commands),
        harness_cpu=harness_cpu,
    )


def kill_running() -> None:
    """Kill every tool process still running (Ctrl-C, an exception)."""
    for proc in list(_RUNNING):
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
        _RUNNING.discard(proc)


def idle_cpu_rate(servers: Sequence[ServerProcess], seconds: float = 2.0) -> dict[str, float]:
    """CPU seconds per second each server process uses while nothing is asked of it."""
    before = {s.role: s.cpu_seconds() for s in servers}
    time.sleep(seconds)
    return {s.role: (s.cpu_seconds() - before[s.role]) / seconds for s in servers}


# -- the tools ---------------------------------------------------------------------------------------


def ecr_password(source: Mapping[str, Any]) -> str:
    """A data-plane password from the ECR emulation's ``GetAuthorizationToken`` (as
    ``aws ecr get-login-password`` gets it)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "ecr",
        endpoint_url=source["api_url"],
        region_name=source["region"],
        aws_access_key_id=source["access_key_id"],
        aws_secret_access_key=source["secret_access_key"],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    try:
        token = client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    finally:
        client.close()
    user, _, password = base64.b64decode(token).decode().partition(":")
    if user != "AWS":
        raise RuntimeError(f"unexpected ECR user {user!r}")
    return password


def ecrcopy_command(
    args: Sequence[str],
    source: Mapping[str, Any],
    destination: Mapping[str, Any],
    home: Path,
    label: str,
    extra_env: Mapping[str, str] | None = None,
) -> Command:
    """``python -m ecrcopy ARGS`` with exactly a GitLab CI job's variables (the emulators' ``env()``), an
    empty ``DOCKER_CONFIG`` and a fresh ``XDG_CACHE_HOME`` under ``home`` (no blob location cache)."""
    (home / "docker-config").mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir(parents=True, exist_ok=True)
    env = {**source["env"], **destination["env"]}
    env["DOCKER_CONFIG"] = str(home / "docker-config")
    env["XDG_CACHE_HOME"] = str(home / "cache")
    env.update(extra_env or {})
    return Command([sys.executable, "-m", "ecrcopy", *args], env, label)


def skopeo_version() -> str | None:
    try:
        out = subprocess.run(["skopeo", "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.split()[-1] if out.strip() else None


def skopeo_home(home: Path, auths: Mapping[str, tuple[str, str]]) -> tuple[dict[str, str], Path, Path]:
    """A private skopeo set-up: ``(env, authfile, policy)``.

    Credentials go in an auth file, not on the command line. ``_CONTAINERS_ROOTLESS_UID`` makes
    containers/image keep its blob info cache (the record it mounts from) in ``home`` instead of the
    machine-wide ``/var/lib/containers/cache`` it uses as root: each run starts cold, like ecrcopy's.
    """
    for sub in ("run", "data", "config", "cache"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    authfile = home / "auth.json"
    entries = {host: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()} for host, (u, p) in auths.items()}
    authfile.write_text(json.dumps({"auths": entries}))
    authfile.chmod(0o600)
    policy = home / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    registries = home / "registries.conf"
    registries.write_text("unqualified-search-registries = []\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
        "_CONTAINERS_ROOTLESS_UID": str(os.geteuid() or 65534),
    }
    return env, authfile, policy


def skopeo_sync_commands(
    source: Mapping[str, Any], destination: Mapping[str, Any], repos: Sequence[str], password: str, home: Path
) -> list[Command]:
    """``skopeo sync --all --preserve-digests`` once per repository, as skopeo is used."""
    env, authfile, policy = skopeo_home(
        home,
        {
            source["data_host"]: ("AWS", password),
            destination["registry_host"]: (destination["credentials"][0], destination["credentials"][1]),
        },
    )
    dst = f"{destination['registry_host']}/{destination['project']}"
    commands = []
    for repo in repos:
        parent = repo.rsplit("/", 1)[0] if "/" in repo else ""
        argv = [
            "skopeo", "--policy", str(policy), "sync", "--all", "--preserve-digests",
            "--src", "docker", "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
            "--authfile", str(authfile),
            f"{source['data_host']}/{repo}", f"{dst}/{parent}".rstrip("/"),
        ]  # fmt: skip
        commands.append(Command(argv, env, f"skopeo sync {repo}"))
    return commands


# -- logs --------------------------------------------------------------------------------------------

Entry = Sequence[Any]  # [method, path, query, status]


def classify(method: str, path: str, query: str, status: int) -> str:
    """The kind of a registry request, for the requests-by-kind tables."""
    if path in ("/v2/", "/v2"):
        return f"ping {method} /v2/"
    if "/referrers/" in path:
        return f"referrers {method}"
    if "/manifests/" in path:
        return f"manifest {method}"
    if "/blobs/uploads" in path:
        if method == "POST":
            if "mount=" in query:
                return "mount POST (201 mounted)" if status == 201 else "mount POST (not mounted)"
            return "upload POST"
        return f"upload {method}"
    if "/blobs/" in path:
        return f"blob {method}"
    if path.endswith("/tags/list"):
        return f"tags/list {method}"
    if path.startswith("/v2/_catalog"):
        return f"catalog {method}"
    return f"other {method}"


def kinds(entries: Iterable[Entry]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for method, path, query, status in entries:
        counts[classify(method, path, query, status)] += 1
        if status == 401:
            counts["(of which 401)"] += 1
    return counts


def _upload_digest(query: str) -> str | None:
    values = parse_qs(query).get("digest")
    return values[0] if values else None


@dataclass
class DestStats:
    uploads: int
    uploaded_digests: list[str]
    bytes_uploaded: int
    mounts: int
    writes: int
    requests: Counter[str]
    tokens: int
    token_failures: int


def destination_stats(logs: Mapping[str, Any], sizes: Mapping[str, int], data_dir: Path) -> DestStats:
    """What the destination registry's access log (and the token service's log) show."""
    entries = logs.get("registry", [])
    uploaded = [
        d
        for method, path, query, status in entries
        if method == "PUT" and status == 201 and "/blobs/uploads/" in path and (d := _upload_digest(query))
    ]
    total = 0
    for digest in uploaded:
        size = sizes.get(digest)
        if size is None:
            hexdigest = digest.split(":", 1)[1]
            path = data_dir / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
            size = path.stat().st_size if path.exists() else 0
        total += size
    mounts = sum(1 for m, p, q, s in entries if m == "POST" and s == 201 and "mount=" in q)
    writes = sum(1 for m, _, _, _ in entries if m in ("POST", "PUT", "PATCH", "DELETE"))
    counts = kinds(entries)
    tokens = logs.get("tokens", [])
    counts["token GET /jwt/auth"] = len(tokens)
    # The GitLab gate refuses expired tokens itself (GitLab's hard expiry): those never reach the registry.
    gate_401 = sum(1 for *_, status in logs.get("gate", []) if status == 401)
    refused = gate_401 - sum(1 for *_, status in entries if status == 401)
    if refused > 0:
        counts["(refused by the gate: expired token)"] = refused
    return DestStats(
        uploads=len(uploaded),
        uploaded_digests=uploaded,
        bytes_uploaded=total,
        mounts=mounts,
        writes=writes,
        requests=counts,
        tokens=len(tokens),
        token_failures=sum(1 for _, ok, _ in tokens if not ok),
    )


def source_stats(logs: Mapping[str, Any]) -> Counter[str]:
    """Requests that reached the ECR emulation: data plane (through its gate), S3 stand-in, ECR API."""
    counts: Counter[str] = Counter()
    for kind, n in kinds(logs.get("ecr_data", [])).items():
        counts[f"(ECR data, {kind[1:]}" if kind.startswith("(") else f"ECR data {kind}"] = n
    counts["S3 GET/HEAD (redirected blob reads)"] = len(logs.get("ecr_s3", []))
    for action, n in Counter(logs.get("ecr_calls", [])).items():
        counts[f"ECR API {action}"] = n
    return counts


# -- correctness -------------------------------------------------------------------------------------


def check_destination(data_dir: Path, project: str, images: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every tag at the destination, read from its filesystem storage, against the source.

    Per tag: the tag's current link names the source digest; every manifest (the tag's and, for an
    index, each child's) is linked in the repository and its stored bytes hash to its digest; every
    blob is linked in the repository and stored with the source's size (distribution verified its
    digest when the upload completed). Returns the problems (empty: all identical).
    """
    root = data_dir / "docker" / "registry" / "v2"
    problems: list[str] = []
    blob_ok: dict[str, bool] = {}

    def blob(digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return root / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"

    for image in images:
        repo = root / "repositories" / project / image["repo"]
        ref = f"{image['repo']}:{image['tag']}"
        try:
            got = (repo / "_manifests" / "tags" / image["tag"] / "current" / "link").read_text().strip()
        except OSError:
            problems.append(f"{ref}: missing")
            continue
        if got != image["digest"]:
            problems.append(f"{ref}: {got}, expected {image['digest']}")
            continue
        for digest in image["manifests"]:
            if not (repo / "_manifests" / "revisions" / "sha256" / digest.split(":", 1)[1] / "link").exists():
                problems.append(f"{ref}: manifest {digest} not in the repository")
            elif digest not in blob_ok:
                try:
                    blob_ok[digest] = "sha256:" + hashlib.sha256(blob(digest).read_bytes()).hexdigest() == digest
                except OSError:
                    blob_ok[digest] = False
            if not blob_ok.get(digest, True):
                problems.append(f"{ref}: manifest {digest} stored wrong")
        for digest, size in image["blobs"]:
            if not (repo / "_layers" / "sha256" / digest.split(":", 1)[1] / "link").exists():
                problems.append(f"{ref}: blob {digest} not linked")
                continue
            if digest not in blob_ok:
                try:
                    blob_ok[digest] = blob(digest).stat().st_size == size
                except OSError:
                    blob_ok[digest] = False
            if not blob_ok[digest]:
                problems.append(f"{ref}: blob {digest} missing or of the wrong size")
    return problems


def spot_check(destination: Mapping[str, Any], images: Sequence[Mapping[str, Any]], n: int = 6) -> list[str]:
    """``GET`` a few tags from the destination registry over HTTP (token auth) and compare digests."""
    from ecrcopy.testing import PushError, fetch_manifest

    step = max(1, len(images) // n)
    problems = []
    creds = (destination["credentials"][0], destination["credentials"][1])
    for image in list(images)[::step][:n]:
        repo = f"{destination['project']}/{image['repo']}"
        try:
            digest = fetch_manifest(destination["registry_url"], repo, image["tag"], auth=creds)[2]
        except PushError as exc:
            problems.append(f"{image['repo']}:{image['tag']}: {exc}")
            continue
        if digest != image["digest"]:
            problems.append(f"{image['repo']}:{image['tag']}: served {digest}, expected {image['digest']}")
    return problems


def blob_sizes(images: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    return {digest: size for image in images for digest, size in image["blobs"]}


# -- numbers and tables ------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "n/a"
    if float(value).is_integer() and digits == 0:
        return str(int(value))
    return f"{value:.{digits}f}"


def count(value: float) -> str:
    """A count (a median of counts may end in .5)."""
    if value != value:
        return "n/a"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def ratio(a: float, b: float) -> str:
    if b != b or a != a or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    """A markdown table; ``align``: one ``l`` or ``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Checks:
    """Failed tools, mismatched digests and broken promises: any entry makes the run exit 1."""

    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            progress(f"CHECK FAILED: {what}")
        return ok
