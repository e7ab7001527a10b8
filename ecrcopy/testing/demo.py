"""A self-contained demo of ecrcopy: ``python -m ecrcopy.testing.demo`` (or ``make demo``).

What it does, all on 127.0.0.1 and in a temporary directory that is removed at the end:

1. starts two real registries (CNCF distribution): an ECR-like *source* with Basic auth and a
   GitLab-like *destination* with JWT bearer tokens from a local token service;
2. pushes four repositories to the source: an OCI multi-arch index, Docker schema 2 images, a Docker
   manifest list and OCI images, all sharing a base layer;
3. runs the real CLI, ``ecrcopy copy SOURCE-REPO DEST-REPO --report FILE``, once per repository,
   credentials passed in ``ECRCOPY_SRC_CREDS`` / ``ECRCOPY_DEST_CREDS``;
4. checks every tag: the destination serves the same bytes, digest and media type as the source; counts
   uploads and cross-repository mounts from the destination registry's own access log;
5. runs the same copies again: every image is ``skipped`` and nothing is written;
6. copies the four repositories once more in a single run through the Python API (``Copier``), where a
   layer uploaded for one repository is *mounted* into the others instead of uploaded again.

Exits 0 when everything matched, 1 otherwise (130 on Ctrl-C). Needs ``docker-registry`` and
``htpasswd`` on PATH and the ``test`` extras installed: ``make demo`` sets all of that up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from .. import Copier, CopyReport, EcrcopyError
from . import (
    DOCKER_LAYER,
    Blob,
    Image,
    Index,
    PushError,
    Registry,
    RegistryError,
    TokenServer,
    docker_image,
    docker_manifest_list,
    fetch_manifest,
    list_tags,
    oci_image,
    oci_index,
    push,
)

__all__ = ["main"]

# The source plays Amazon ECR (user "AWS" + a password), the destination GitLab (a CI job token).
SRC_USER, SRC_PASSWORD = "AWS", "demo-ecr-password"
DEST_USER, DEST_PASSWORD = "gitlab-ci-token", "demo-job-token"
#: GitLab group/project the repositories land under (at most two path levels below a project).
DEST_PROJECT = "acme/containers"
#: Where the single-run Python API copy of step 6 lands.
API_PROJECT = "acme/one-run"
CLI_TIMEOUT = 120.0

KiB = 1024
MiB = 1024 * KiB

_KIND = {
    "application/vnd.oci.image.index.v1+json": "OCI index",
    "application/vnd.oci.image.manifest.v1+json": "OCI image",
    "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
    "application/vnd.docker.distribution.manifest.v2+json": "Docker schema 2",
}


@dataclass
class Repo:
    """A source repository, its destination and the tags seeded into it."""

    source: str
    tags: dict[str, Image | Index] = field(default_factory=dict)

    @property
    def destination(self) -> str:
        return f"{DEST_PROJECT}/{self.source}"

    @property
    def slug(self) -> str:
        return self.source.replace("/", "-")


class DemoFailure(Exception):
    """Something did not match; the message says what."""


# -- output ------------------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title} " + "=" * max(0, 96 - len(title)))


def indent(text: str, prefix: str = "    ") -> str:
    return textwrap.indent(text.rstrip("\n"), prefix) if text.strip() else prefix + "(no output)"


def short(digest: str) -> str:
    return digest[:19]


def kind(obj: Image | Index) -> str:
    text = _KIND.get(obj.media_type, obj.media_type)
    if isinstance(obj, Index):
        platforms = [c.platform for c in obj.children if isinstance(c, Image)]
        text += " (" + ", ".join(f"{p['os']}/{p['architecture']}" for p in platforms) + ")"
    return text


def size_of(obj: Image | Index) -> int:
    return sum(blob.size for blob in obj.blobs)


# -- the images --------------------------------------------------------------------------------------


def catalogue() -> list[Repo]:
    """Four repositories, ten tags; every amd64 image starts with the same 3 MiB base layer."""
    base_amd64 = Blob.generated(3 * MiB, seed=1)  # think "debian:12-slim", linux/amd64
    base_arm64 = Blob.generated(3 * MiB, seed=2)  # the same for linux/arm64
    runtime = Blob.generated(1 * MiB, seed=3)  # think "python 3.12", shared by api and worker

    def docker(blob: Blob) -> Blob:
        return blob.with_media_type(DOCKER_LAYER)  # same bytes and digest, Docker's media type

    base_index = oci_index(
        [
            oci_image([base_amd64], seed=10, platform="linux/amd64"),
            oci_image([base_arm64], seed=11, platform="linux/arm64"),
        ]
    )
    web_v2 = docker_manifest_list(
        [
            docker_image([docker(base_amd64), 400 * KiB], seed=30, platform="linux/amd64"),
            docker_image([docker(base_arm64), 400 * KiB], seed=31, platform="linux/arm64"),
        ]
    )
    return [
        Repo("platform/base", {"12": base_index, "latest": base_index}),
        Repo(
            "shop/api",
            {
                "v1.0": docker_image([docker(base_amd64), docker(runtime), 256 * KiB], seed=20),
                "v1.1": docker_image([docker(base_amd64), docker(runtime), 300 * KiB], seed=21),
            },
        ),
        Repo(
            "shop/web",
            {
                "v1": docker_image([docker(base_amd64), 350 * KiB], seed=32),
                "v2": web_v2,
            },
        ),
        Repo(
            "shop/worker",
            {
                "main": oci_image([base_amd64, runtime, 512 * KiB], seed=40),
                "v3": oci_image([base_amd64, runtime, 128 * KiB], seed=41),
                "v3.0.1": oci_image([base_amd64, runtime, 130 * KiB], seed=42),
            },
        ),
    ]


def seed(registry: Registry, repos: Sequence[Repo]) -> None:
    with httpx.Client(timeout=60.0) as http:
        for repo in repos:
            for tag, obj in repo.tags.items():
                push(registry.url, repo.source, obj, tag, auth=(SRC_USER, SRC_PASSWORD), client=http)
                name = f"{repo.source}:{tag}"
                say(f"  {name:<22} {kind(obj):<48} {size_of(obj) / MiB:4.1f} MiB  {short(obj.digest)}")


# -- the CLI -----------------------------------------------------------------------------------------


def run_cli(args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m ecrcopy ARGS`` as a subprocess; its output is printed indented."""
    say("  $ ecrcopy " + " ".join(shlex.quote(a) for a in args))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ecrcopy", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DemoFailure(f"ecrcopy did not finish within {CLI_TIMEOUT:.0f} s") from exc
    say(indent(proc.stdout))
    if proc.stderr.strip():
        say(indent(proc.stderr, "    stderr: "))
    if proc.returncode != 0:
        raise DemoFailure(f"ecrcopy exited with {proc.returncode}")
    return proc


def cli_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRCOPY_")}
    env["ECRCOPY_SRC_CREDS"] = f"{SRC_USER}:{SRC_PASSWORD}"
    env["ECRCOPY_DEST_CREDS"] = f"{DEST_USER}:{DEST_PASSWORD}"
    env["DOCKER_CONFIG"] = str(work / "docker-config")  # empty: never read the user's own config.json
    env["PYTHONUNBUFFERED"] = "1"
    return env


def copy_all(
    repos: Sequence[Repo], source: Registry, destination: Registry, reports: Path, env: dict[str, str]
) -> list[dict[str, Any]]:
    """One ``ecrcopy copy`` per repository; the parsed ``--report`` files."""
    results = []
    for repo in repos:
        report = reports / f"{repo.slug}.json"
        say()
        run_cli(
            ["copy", f"{source.host}/{repo.source}", f"{destination.host}/{repo.destination}", "--report", str(report)],
            env,
        )
        data: dict[str, Any] = json.loads(report.read_text())
        results.append(data)
    return results


# -- checks ------------------------------------------------------------------------------------------


class Checks:
    """Collects pass/fail lines; any failure makes the demo exit 1."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            say(f"  MISMATCH  {what}")
        return ok


def verify_images(repos: Sequence[Repo], source: Registry, destination: Registry, checks: Checks) -> int:
    """Compare every tag (and index child) byte for byte on both sides; returns the number that matched."""
    matched = 0
    src_auth = (SRC_USER, SRC_PASSWORD)
    dst_auth = (DEST_USER, DEST_PASSWORD)
    with httpx.Client(timeout=30.0) as http:
        for repo in repos:
            dest_tags = sorted(list_tags(destination.url, repo.destination, auth=dst_auth, client=http))
            checks.check(dest_tags == sorted(repo.tags), f"{repo.destination}: tags {dest_tags} != {sorted(repo.tags)}")
            for tag, obj in repo.tags.items():
                src_raw, src_type, src_digest = fetch_manifest(source.url, repo.source, tag, auth=src_auth, client=http)
                dst_raw, dst_type, dst_digest = fetch_manifest(
                    destination.url, repo.destination, tag, auth=dst_auth, client=http
                )
                same = src_raw == dst_raw and src_type == dst_type and src_digest == dst_digest == obj.digest
                children_ok = True
                if isinstance(obj, Index):
                    for child in obj.children:
                        raw, _, _ = fetch_manifest(
                            destination.url, repo.destination, child.digest, auth=dst_auth, client=http
                        )
                        children_ok = children_ok and raw == child.raw
                verdict = "identical" if same and children_ok else "DIFFERENT"
                name = f"{repo.destination}:{tag}"
                say(f"  {name:<38} {_KIND.get(dst_type, dst_type):<22} {short(dst_digest)}  {verdict}")
                if checks.check(same and children_ok, f"{repo.destination}:{tag} differs from {repo.source}:{tag}"):
                    matched += 1
    return matched


def totals(reports: Sequence[dict[str, Any]]) -> dict[str, int]:
    keys = ("images", "copied", "skipped", "failed", "blobs_uploaded", "blobs_mounted", "blobs_existing")
    return {k: sum(int(r["totals"][k]) for r in reports) for k in keys} | {
        "manifests_pushed": sum(int(r["totals"]["manifests_pushed"]) for r in reports)
    }


def statuses(reports: Sequence[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(i["destination"], i["status"], i.get("reason")) for r in reports for i in r["images"]]


# -- step 6: one run through the Python API ----------------------------------------------------------


async def copy_in_one_run(repos: Sequence[Repo], source: Registry, destination: Registry) -> CopyReport:
    """Every repository through one :class:`~ecrcopy.Copier`, which remembers where blobs already are."""
    reports = []
    async with Copier(
        source_credentials=(SRC_USER, SRC_PASSWORD), destination_credentials=(DEST_USER, DEST_PASSWORD)
    ) as copier:
        for repo in repos:
            reports.append(
                await copier.copy_repository(
                    f"{source.host}/{repo.source}", f"{destination.host}/{API_PROJECT}/{repo.source}"
                )
            )
    return CopyReport.merge(reports)


# -- main --------------------------------------------------------------------------------------------


def preflight() -> None:
    missing = [tool for tool in ("docker-registry", "htpasswd") if shutil.which(tool) is None]
    try:
        import cryptography  # noqa: F401
        import jwt  # noqa: F401
    except ImportError:
        missing.append("the test extras (pip install -e '.[test]')")
    if missing:
        raise DemoFailure(f"missing {', '.join(missing)}: run 'make demo', which installs them")


def run() -> int:
    started = time.monotonic()
    preflight()
    checks = Checks()
    repos = catalogue()
    n_images = sum(len(r.tags) for r in repos)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ecrcopy-demo-")))
        reports_dir = work / "reports"
        step("1. Start an ECR-like source and a GitLab-like destination registry")
        ecr = stack.enter_context(Registry(work / "ecr", htpasswd={SRC_USER: SRC_PASSWORD}))
        tokens = stack.enter_context(TokenServer(users={DEST_USER: DEST_PASSWORD}))
        gitlab = stack.enter_context(Registry(work / "gitlab", token_auth=tokens))
        say(f"  source       {ecr.url}   Basic auth, user {SRC_USER!r} (as Amazon ECR)")
        say(f"  destination  {gitlab.url}   Bearer JWTs from {tokens.realm} (as GitLab)")
        say(f"  work dir     {work} (removed at the end)")

        step(f"2. Push {n_images} tags in {len(repos)} repositories to the source")
        seed(ecr, repos)

        step("3. Copy each repository with the CLI")
        say(f"  credentials: ECRCOPY_SRC_CREDS={SRC_USER}:*** ECRCOPY_DEST_CREDS={DEST_USER}:***")
        env = cli_env(work)
        gitlab.reset()
        first = copy_all(repos, ecr, gitlab, reports_dir, env)
        uploads, mounts, manifest_puts = gitlab.blob_uploads(), len(gitlab.mounts()), len(gitlab.manifest_puts())
        t1 = totals(first)
        checks.check(t1["copied"] == n_images, f"first run copied {t1['copied']} of {n_images} images")
        checks.check(
            uploads == t1["blobs_uploaded"],
            f"registry log shows {uploads} blob uploads, the reports {t1['blobs_uploaded']}",
        )
        checks.check(
            mounts == t1["blobs_mounted"], f"registry log shows {mounts} mounts, the reports {t1['blobs_mounted']}"
        )
        checks.check(
            manifest_puts == t1["manifests_pushed"],
            f"registry log shows {manifest_puts} manifest PUTs, the reports {t1['manifests_pushed']}",
        )
        say()
        say(f"  --report {reports_dir.name}/{repos[1].slug}.json, abridged:")
        sample = first[1]
        abridged = {k: sample[k] for k in ("ok", "totals", "duration_seconds")}
        abridged["images"] = [{k: sample["images"][0][k] for k in ("source", "status", "digest", "blobs_uploaded")}]
        say(indent(json.dumps(abridged, indent=2)))

        step("4. Verify: the destination serves the same manifest bytes as the source")
        matched = verify_images(repos, ecr, gitlab, checks)

        step("5. Run the same copies again: everything is up to date")
        gitlab.reset()
        second = copy_all(repos, ecr, gitlab, reports_dir, env)
        writes = gitlab.writes()
        t2 = totals(second)
        for destination, status, reason in statuses(second):
            checks.check(status == "skipped" and reason == "up-to-date", f"second run: {destination} is {status}")
        checks.check(not writes, f"second run wrote to the destination: {[f'{w.method} {w.path}' for w in writes]}")

        step("6. Copy all repositories in ONE run with the Python API")
        say(f"  async with ecrcopy.Copier(...) as copier: await copier.copy_repository(...) -> {API_PROJECT}/...")
        gitlab.reset()
        one_run = anyio.run(copy_in_one_run, repos, ecr, gitlab)
        api_uploads, api_mounts = gitlab.blob_uploads(), len(gitlab.mounts())
        for result in one_run.images:
            name = result.destination.split("/", 1)[1]
            say(
                f"  {result.status:<8} {name:<34} {result.blobs_uploaded} uploaded, "
                f"{result.blobs_mounted} mounted, {result.blobs_existing} existing"
            )
        checks.check(one_run.ok and one_run.totals.copied == n_images, "the single-run copy did not copy every image")
        checks.check(
            api_uploads == one_run.totals.blobs_uploaded and api_mounts == one_run.totals.blobs_mounted,
            f"single run: registry log shows {api_uploads} uploads and {api_mounts} mounts, the report "
            f"{one_run.totals.blobs_uploaded} and {one_run.totals.blobs_mounted}",
        )
        checks.check(api_mounts > 0, "the single-run copy mounted nothing")

        step("Summary")
        say(f"  images        {n_images} tags in {len(repos)} repositories, {matched} byte-identical on both sides")
        say(
            f"  first run     {t1['copied']} copied; destination log: {uploads} blob uploads, {mounts} mounts, "
            f"{manifest_puts} manifest PUTs"
        )
        say(f"  second run    {t2['skipped']} skipped (up-to-date); {len(writes)} writes to the destination")
        say(
            f"  one run (API) {one_run.totals.copied} copied; destination log: {api_uploads} blob uploads, "
            f"{api_mounts} mounts"
        )
        if api_mounts > mounts:
            say(
                "  note          each 'ecrcopy copy' is a run of its own and mounts only from repositories it filled"
                "\n                itself, so one CLI run per repository uploads shared base layers once per"
                "\n                repository; one run for all repositories uploads each blob once and mounts it."
            )
        say(f"  took          {time.monotonic() - started:.1f} s; registries stopped, {work} removed")
    if checks.failures:
        say()
        say(f"FAILED: {len(checks.failures)} check(s) did not match:")
        for failure in checks.failures:
            say(f"  - {failure}")
        return 1
    say()
    say("OK: every image copied byte-exact, the second run was a no-op.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args:
        print(__doc__)
        return 0 if args[0] in ("-h", "--help") else 2
    try:
        return run()
    except (DemoFailure, RegistryError, PushError, EcrcopyError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: registries stopped, temporary files removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
