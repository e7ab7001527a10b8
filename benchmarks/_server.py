"""The emulators of ``bench_ecr.py``, in a process of their own so their CPU can be measured apart.

Started by :class:`_harness.ServerProcess` as ``python benchmarks/_server.py`` in a new session (so a
Ctrl-C in the terminal reaches the orchestrator, which then stops this process in order). It reads
one JSON command per line on stdin and answers one JSON line on the stdout it was started with;
anything else that writes to stdout in this process goes to stderr instead. It hosts at most one
:class:`~ecrcopy.testing.EcrEmulator` and one :class:`~ecrcopy.testing.GitLabEmulator` at a time
(the orchestrator runs one process for the source and one for the destinations). EOF on stdin,
``quit`` or SIGTERM stop every emulator (and their ``docker-registry`` processes) before exiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import _seed

from ecrcopy.testing import EcrEmulator, GitLabEmulator


class Server:
    def __init__(self) -> None:
        self.ecr: EcrEmulator | None = None
        self.gitlab: GitLabEmulator | None = None

    # -- source --------------------------------------------------------------------------------------

    def start_ecr(self, workdir: str) -> dict[str, Any]:
        if self.ecr is not None:
            raise RuntimeError("an ECR emulation is already running")
        ecr = EcrEmulator(Path(workdir))
        ecr.start()
        self.ecr = ecr
        return {
            "env": ecr.env(),
            "api_url": ecr.api_url,
            "data_url": ecr.data_url,
            "data_host": ecr.data_host,
            "data_dir": str(ecr.data_registry.data_dir),
            "access_key_id": ecr.access_key_id,
            "secret_access_key": ecr.secret_access_key,
            "region": ecr.region,
        }

    def seed(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        ecr = self._ecr()
        started = time.perf_counter()
        if kind == "c40":
            images = _seed.seed_c40(ecr, params["repos"], params["tags"], params["scale_mib"])
        elif kind == "scale":
            images = _seed.seed_scale(ecr, params["repos"], params["tags"])
        elif kind == "large":
            images = _seed.seed_large(ecr, params["mib"])
        else:
            raise ValueError(f"unknown corpus {kind!r}")
        checked = _seed.check_pullable(ecr, images, sample=params.get("pull_sample", 12))
        ecr.reset_calls()
        ecr.data_proxy.reset()
        ecr.blob_server.reset()
        return _seed.corpus_summary(images, time.perf_counter() - started, checked)

    def stop_ecr(self) -> None:
        ecr, self.ecr = self.ecr, None
        if ecr is not None:
            ecr.stop()

    def _ecr(self) -> EcrEmulator:
        if self.ecr is None:
            raise RuntimeError("no ECR emulation is running")
        return self.ecr

    # -- destination ---------------------------------------------------------------------------------

    def start_gitlab(self, workdir: str, project: str) -> dict[str, Any]:
        if self.gitlab is not None:
            raise RuntimeError("a GitLab emulation is already running")
        gitlab = GitLabEmulator(Path(workdir), project_path=project)
        gitlab.start()
        self.gitlab = gitlab
        return {
            "env": gitlab.env(),
            "registry_host": gitlab.registry_host,
            "registry_url": gitlab.registry_url,
            "data_dir": str(gitlab.registry.data_dir),
            "project": gitlab.project_path,
            "credentials": list(gitlab.credentials),
        }

    def stop_gitlab(self) -> None:
        gitlab, self.gitlab = self.gitlab, None
        if gitlab is not None:
            gitlab.stop()

    # -- logs ----------------------------------------------------------------------------------------

    def reset_logs(self) -> None:
        if self.ecr is not None:
            self.ecr.reset_calls()
            self.ecr.data_proxy.reset()
            self.ecr.blob_server.reset()
        if self.gitlab is not None:
            self.gitlab.registry.reset()
            self.gitlab.tokens.reset()
            if self.gitlab.gate is not None:
                self.gitlab.gate.reset()

    def logs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ecr is not None:
            out["ecr_data"] = [[r.method, r.path, r.query, r.status] for r in self.ecr.data_proxy.requests]
            out["ecr_s3"] = [[r.method, r.path, r.query, r.status] for r in self.ecr.blob_server.requests]
            out["ecr_calls"] = self.ecr.calls
            out["ecr_s3_rejected_auth"] = self.ecr.blob_server.rejected_auth
        if self.gitlab is not None:
            out["registry"] = [[r.method, r.path, r.query, r.status] for r in self.gitlab.registry.requests()]
            out["tokens"] = [[t.user, t.ok, len(t.scopes)] for t in self.gitlab.tokens.requests]
            gate = self.gitlab.gate
            out["gate"] = [[r.method, r.path, r.query, r.status] for r in gate.requests] if gate is not None else []
        return out

    def stop(self) -> None:
        try:
            self.stop_gitlab()
        finally:
            self.stop_ecr()


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main() -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when to stop
    server = Server()
    try:
        protocol.write(json.dumps({"ok": True, "result": {"pid": os.getpid()}}) + "\n")
        for line in sys.stdin:
            request = json.loads(line)
            command = request["cmd"]
            if command == "quit":
                break
            try:
                result = getattr(server, command)(**request.get("args", {}))
                reply: dict[str, Any] = {"ok": True, "result": result}
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            protocol.write(json.dumps(reply) + "\n")
    finally:
        with contextlib.suppress(Exception):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
