"""The whole ECR → GitLab migration, locally: ``python -m ecrcopy.testing.demo`` (or ``make demo``).

Everything runs on 127.0.0.1, in a temporary directory that is removed at the end:

1. starts an emulated Amazon ECR (:class:`~ecrcopy.testing.EcrEmulator`: moto's ECR API behind an
   ECR-like front, a real registry as data plane, blob downloads redirected to an S3 stand-in) and an
   emulated GitLab container registry (:class:`~ecrcopy.testing.GitLabEmulator`: JWT token service,
   real registry, GitLab's naming rule and hard token expiry);
2. fills ECR with ten repositories: OCI and Docker multi-arch images, Docker schema 2 and OCI images
   sharing base layers, a repository three levels deep, an untagged image, an ECR tag that is not
   a valid OCI tag, and signatures: a notation-style signature and an SBOM of a multi-arch image, a
   signature of that SBOM (all untagged, with ``subject``, as ECR stores them) and a cosign ``.sig`` tag;
3. runs the real CLI, ``ecrcopy migrate --dry-run``: the plan and its size, nothing written;
4. runs ``ecrcopy migrate --report report.json --junit junit.xml`` with only the variables a GitLab CI
   job has (the emulators' ``env()``) and an empty ``DOCKER_CONFIG``;
5. checks every tag byte for byte on both sides, every signature and SBOM by digest and in the
   fallback tag ``sha256-<hex>`` GitLab needs, the report against the GitLab registry's own access
   log, the JUnit file, and that every ECR API call is one of ``ecrcopy.ALLOWED_ACTIONS``;
6. runs the migration again: every image ``skipped``, nothing written;
7. runs ``ecrcopy verify --deep``: every tag, platform image, blob and referrer is at the destination.

Exits 0 when everything matched, 1 otherwise, 130 on Ctrl-C. Needs ``docker-registry`` on PATH and
the ``test`` extras (moto, pyjwt, cryptography): ``make demo`` sets all of that up.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .. import ALLOWED_ACTIONS, EcrcopyError
from . import (
    DOCKER_LAYER,
    Blob,
    EcrEmulator,
    GitLabEmulator,
    Image,
    Index,
    PushError,
    RegistryError,
    docker_image,
    docker_manifest_list,
    fetch_manifest,
    list_tags,
    oci_artifact,
    oci_image,
    oci_index,
)

__all__ = ["main"]

#: The GitLab project the images land in: CI_REGISTRY_IMAGE is <registry>/<this>.
PROJECT = "acme/ecr-mirror"
CLI_TIMEOUT = 180.0
KiB = 1024
MiB = 1024 * KiB
#: The OCI tag grammar: ECR accepts up to 300 characters of anything, OCI registries do not.
OCI_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
#: Variables the emulators need and a real GitLab CI job does not.
EMULATOR_ONLY = {
    "AWS_ENDPOINT_URL_ECR": "the local ECR API (real ECR: boto3's default endpoint)",
    "ECRCOPY_SOURCE_REGISTRY_URL": "the local ECR data plane (real ECR: https://<account>.dkr.ecr.<region>...)",
    "AWS_EC2_METADATA_DISABLED": "keeps boto3 from probing for an EC2 instance role",
}
SECRETS = ("AWS_SECRET_ACCESS_KEY", "CI_REGISTRY_PASSWORD")

_KIND = {
    "application/vnd.oci.image.index.v1+json": "OCI index",
    "application/vnd.oci.image.manifest.v1+json": "OCI image",
    "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
    "application/vnd.docker.distribution.manifest.v2+json": "Docker schema 2",
}


@dataclass(frozen=True)
class Seeded:
    """An image pushed to the emulated ECR under ``tags`` (none: untagged)."""

    repository: str
    obj: Image | Index
    tags: tuple[str, ...]

    @property
    def copied_tags(self) -> list[str]:
        """The tags ecrcopy copies: the valid OCI ones."""
        return [t for t in self.tags if OCI_TAG.fullmatch(t)]


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


def short(digest: str | None) -> str:
    return (digest or "")[:19]


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def kind(obj: Image | Index) -> str:
    text = _KIND.get(obj.media_type, obj.media_type)
    if isinstance(obj, Index):
        platforms = [c.platform for c in obj.children if isinstance(c, Image)]
        text += " (" + ", ".join(f"{p['os']}/{p['architecture']}" for p in platforms) + ")"
    return text


class Checks:
    """Collects what did not match; any entry makes the demo exit 1."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            say(f"  MISMATCH  {what}")
        return ok


# -- the ECR registry to migrate ---------------------------------------------------------------------


def destination_of(repository: str) -> str:
    """GitLab allows two path levels below the project: ecrcopy joins deeper levels with '-'."""
    parts = repository.split("/")
    return repository if len(parts) <= 2 else "/".join([parts[0], "-".join(parts[1:])])


def catalogue() -> list[Seeded]:
    """Ten repositories; the amd64 images share one base layer, the arm64 ones another."""
    base_amd64 = Blob.generated(2 * MiB, seed=1)  # think "debian:12-slim"
    base_arm64 = Blob.generated(2 * MiB, seed=2)
    python_amd64 = Blob.generated(1 * MiB, seed=3)  # think "python 3.12", on top of the base
    python_arm64 = Blob.generated(1 * MiB, seed=4)

    def docker(blob: Blob) -> Blob:
        return blob.with_media_type(DOCKER_LAYER)  # the same bytes and digest, Docker's media type

    def amd64(*layers: Blob | int, seed: int) -> Image:
        return oci_image([base_amd64, *layers], seed=seed, platform="linux/amd64")

    def arm64(*layers: Blob | int, seed: int) -> Image:
        return oci_image([base_arm64, *layers], seed=seed, platform="linux/arm64")

    def docker_amd64(*layers: Blob | int, seed: int) -> Image:
        return docker_image([docker(base_amd64), *layers], seed=seed, platform="linux/amd64")

    def docker_arm64(*layers: Blob | int, seed: int) -> Image:
        return docker_image([docker(base_arm64), *layers], seed=seed, platform="linux/arm64")

    base = oci_index([amd64(seed=10), arm64(seed=11)])
    return [
        Seeded("platform/base", base, ("12", "latest")),
        Seeded(
            "platform/python",
            docker_manifest_list(
                [docker_amd64(docker(python_amd64), seed=12), docker_arm64(docker(python_arm64), seed=13)]
            ),
            ("3.12",),
        ),
        Seeded("shop/api", docker_amd64(docker(python_amd64), 280 * KiB, seed=20), ()),  # an old, untagged build
        Seeded("shop/api", docker_amd64(docker(python_amd64), 256 * KiB, seed=21), ("v1.0",)),
        # "+" is fine in an ECR tag, not in an OCI tag: reported skipped (invalid_tag), v1.1 is copied
        Seeded("shop/api", docker_amd64(docker(python_amd64), 300 * KiB, seed=22), ("v1.1", "v1.1+build.42")),
        Seeded("shop/web", amd64(350 * KiB, seed=30), ("v1",)),
        Seeded("shop/web", oci_index([amd64(360 * KiB, seed=31), arm64(360 * KiB, seed=32)]), ("v2", "latest")),
        Seeded("shop/worker", amd64(python_amd64, 500 * KiB, seed=40), ("main",)),
        Seeded("shop/worker", amd64(python_amd64, 128 * KiB, seed=41), ("v3", "v3.0.1")),
        Seeded("data/etl/nightly", amd64(python_amd64, 400 * KiB, seed=50), ("2026-06-01", "latest")),
        Seeded(
            "ml/inference",
            oci_index([amd64(python_amd64, 700 * KiB, seed=60), arm64(python_arm64, 700 * KiB, seed=61)]),
            ("v0.9",),
        ),
        Seeded("tools/ci-runner", docker_amd64(220 * KiB, seed=70), ("1.4", "stable")),
        Seeded(
            "legacy/cron",
            docker_manifest_list([docker_amd64(90 * KiB, seed=80), docker_arm64(90 * KiB, seed=81)]),
            ("2019",),
        ),
        Seeded("docs", oci_image([600 * KiB], seed=90), ("latest",)),  # one level, no shared layers
    ]


NOTATION = "application/vnd.cncf.notary.signature"


def fallback_tag(digest: str) -> str:
    """The referrers tag schema: the index of a subject's referrers is tagged ``sha256-<hex>``."""
    return digest.replace(":", "-")


def signatures(images: Sequence[Seeded]) -> list[Seeded]:
    """shop/web:v2 signed, with an SBOM and a signature of the SBOM (untagged, with ``subject``, as
    notation and ECR managed signing leave them); platform/base signed the older cosign way (a tag)."""
    web = next(i.obj for i in images if i.repository == "shop/web" and "v2" in i.tags)
    base = next(i.obj for i in images if i.repository == "platform/base")
    signature = oci_artifact(
        web, artifact_type=NOTATION, payload=b"notation signature of shop/web:v2", annotations={"signer": "release"}
    )
    sbom = oci_artifact(web, artifact_type="application/spdx+json", payload=b'{"spdxVersion": "SPDX-2.3"}')
    sbom_signature = oci_artifact(sbom, artifact_type=NOTATION, payload=b"notation signature of the SBOM")
    cosign = oci_image(
        [Blob.from_bytes(b'{"critical": {}}', "application/vnd.dev.cosign.simplesigning.v1+json")],
        seed=95,
        platform="unknown/unknown",
    )
    return [
        Seeded("shop/web", signature, ()),
        Seeded("shop/web", sbom, ()),
        Seeded("shop/web", sbom_signature, ()),
        Seeded("platform/base", cosign, (fallback_tag(base.digest) + ".sig",)),
    ]


def check_referrers(gl: GitLabEmulator, refs: Sequence[Seeded], checks: Checks) -> None:
    """Every referrer at GitLab by digest, byte-identical, and listed in its subject's fallback tag."""
    with httpx.Client(timeout=30.0) as http:
        for ref in refs:
            destination = f"{PROJECT}/{destination_of(ref.repository)}"
            raw = fetch_manifest(gl.registry.url, destination, ref.obj.digest, auth=gl.credentials, client=http)[0]
            subject = ref.obj.subject
            what = ref.obj.manifest.get("artifactType") or f"cosign tag {ref.tags[0][:19]}….sig"
            listed = "by tag"
            if subject is not None:
                index = fetch_manifest(
                    gl.registry.url, destination, fallback_tag(subject.digest), auth=gl.credentials, client=http
                )[0]
                found = {entry["digest"] for entry in json.loads(index)["manifests"]}
                listed = f"listed in {fallback_tag(subject.digest)[:19]}…" if ref.obj.digest in found else "NOT LISTED"
                checks.check(ref.obj.digest in found, f"{ref.obj.digest} missing from its subject's fallback tag")
            same = raw == ref.obj.raw
            verdict = "identical" if same else "DIFFERENT"
            say(f"  {ref.repository:<14} {what:<40} {short(ref.obj.digest)}  {verdict}, {listed}")
            checks.check(same, f"{destination}@{ref.obj.digest} differs from ECR")


def seed(ecr: EcrEmulator, images: Sequence[Seeded]) -> None:
    for image in images:
        ecr.add_image(image.repository, image.obj, list(image.tags))
        tags = ", ".join(image.tags) if image.tags else "(untagged)"
        size = sum(blob.size for blob in image.obj.blobs)
        say(f"  {image.repository:<17} {tags:<21} {kind(image.obj):<47} {size / MiB:4.1f} MiB")


# -- the CLI -----------------------------------------------------------------------------------------


def ci_env(ecr: EcrEmulator, gl: GitLabEmulator, docker_config: Path) -> dict[str, str]:
    """The ecrcopy process gets these variables and nothing else (no PATH, no HOME, no AWS profile)."""
    env = {**ecr.env(), **gl.env()}
    env["DOCKER_CONFIG"] = str(docker_config)  # an empty directory: no credentials from config.json
    env["XDG_CACHE_HOME"] = str(docker_config.parent / "cache")  # the blob location cache stays in the demo
    return env


def show_env(env: dict[str, str]) -> None:
    say("  The ecrcopy process gets exactly these variables, nothing else (no PATH, HOME or AWS profile):")
    for name in sorted(env, key=lambda n: (n in EMULATOR_ONLY, n)):
        setting = f"{name}={'***' if name in SECRETS else env[name]}"
        note = EMULATOR_ONLY.get(name, "")
        if name == "DOCKER_CONFIG":
            note = "an empty directory: no credentials from a config.json"
        if name == "XDG_CACHE_HOME":
            note = "keeps ecrcopy's blob location cache inside the demo's directory"
        if name in EMULATOR_ONLY:
            note = "emulator only: " + note
        say(f"    {setting:<50}  # {note}" if note else f"    {setting}")
    say("  In a real GitLab CI job, GitLab sets CI_REGISTRY*; you add the AWS_* variables (masked) under")
    say("  Settings > CI/CD > Variables. The three 'emulator only' variables point at the local emulation")
    say("  and are not needed in real CI.")


def run_cli(
    args: Sequence[str], env: dict[str, str], *, only: str = "", expect: int = 0
) -> subprocess.CompletedProcess[str]:
    """``ecrcopy ARGS`` (the real CLI, as a subprocess); its output (the lines starting with ``only``) indented."""
    shown = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("CI_NODE_"))
    say("  $ " + (shown + " " if shown else "") + "ecrcopy " + " ".join(shlex.quote(a) for a in args))
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
    say(indent("\n".join(line for line in proc.stdout.splitlines() if line.startswith(only))))
    if proc.stderr.strip():
        say(indent(proc.stderr, "    stderr: "))
    if proc.returncode != expect:
        raise DemoFailure(f"ecrcopy exited with {proc.returncode}, expected {expect}")
    return proc


# -- checks ------------------------------------------------------------------------------------------


def verify_images(
    ecr: EcrEmulator, gl: GitLabEmulator, images: Sequence[Seeded], checks: Checks, extra_tags: dict[str, list[str]]
) -> int:
    """Fetch every copied tag (and index child) from both sides and compare bytes; the number identical."""
    identical = 0
    with httpx.Client(timeout=30.0) as http:
        for image in images:
            destination = f"{PROJECT}/{destination_of(image.repository)}"
            for tag in image.copied_tags:
                src_raw, src_type, src_digest = fetch_manifest(
                    ecr.data_registry.url, image.repository, tag, client=http
                )
                dst_raw, dst_type, dst_digest = fetch_manifest(
                    gl.registry.url, destination, tag, auth=gl.credentials, client=http
                )
                same = src_raw == dst_raw and src_type == dst_type and src_digest == dst_digest == image.obj.digest
                if isinstance(image.obj, Index):
                    for child in image.obj.children:
                        raw = fetch_manifest(
                            gl.registry.url, destination, child.digest, auth=gl.credentials, client=http
                        )
                        same = same and raw[0] == child.raw
                verdict = "identical" if same else "DIFFERENT"
                name = f"{image.repository}:{tag}"
                say(
                    f"  {name:<28} -> {destination_of(image.repository) + ':' + tag:<28} {short(dst_digest)}  {verdict}"
                )
                if checks.check(same, f"{destination}:{tag} differs from ECR {image.repository}:{tag}"):
                    identical += 1
        # nothing else arrived: no invalid tag, no untagged image as a tag (signature tags are expected)
        for repository in sorted({i.repository for i in images}):
            destination = f"{PROJECT}/{destination_of(repository)}"
            expected = sorted(
                [t for i in images if i.repository == repository for t in i.copied_tags]
                + extra_tags.get(repository, [])
            )
            found = sorted(list_tags(gl.registry.url, destination, auth=gl.credentials, client=http))
            checks.check(found == expected, f"{destination} has tags {found}, expected {expected}")
    return identical


def distinct_blobs(images: Sequence[Seeded]) -> tuple[int, int]:
    """(distinct blobs of the copied images, blobs that also belong in another repository)."""
    per_repository: dict[str, set[str]] = {}
    for image in images:
        if image.copied_tags or image.obj.subject is not None:
            per_repository.setdefault(image.repository, set()).update(b.digest for b in image.obj.blobs)
    everything = set().union(*per_repository.values())
    return len(everything), sum(len(s) for s in per_repository.values()) - len(everything)


def load_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def junit_counts(path: Path) -> tuple[int, int, int]:
    """(test cases, failures, skipped) of a JUnit file."""
    suite = ET.parse(path).getroot().find("testsuite")  # noqa: S314 - our own file
    if suite is None:
        raise DemoFailure(f"{path.name} has no <testsuite>")
    cases = suite.findall("testcase")
    failures = sum(1 for c in cases if c.find("failure") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    return len(cases), failures, skipped


# -- main --------------------------------------------------------------------------------------------


def preflight() -> None:
    missing = [] if shutil.which("docker-registry") else ["docker-registry"]
    try:
        import cryptography  # noqa: F401
        import jwt  # noqa: F401
        import moto  # noqa: F401
    except ImportError:
        missing.append("the test extras (pip install -e '.[test]')")
    if missing:
        raise DemoFailure(f"missing {', '.join(missing)}: run 'make demo', which installs them")


def run() -> int:
    started = time.monotonic()
    preflight()
    checks = Checks()
    images = catalogue()
    refs = signatures(images)
    repositories = sorted({i.repository for i in images})
    copied_tags = sum(len(i.copied_tags) for i in images)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ecrcopy-demo-")))
        step("1. Start an emulated Amazon ECR and an emulated GitLab container registry")
        ecr = stack.enter_context(EcrEmulator(work / "ecr"))
        gl = stack.enter_context(GitLabEmulator(work / "gitlab", project_path=PROJECT))
        say(f"  ECR API         {ecr.api_url}   moto, as {ecr.region} for account {ecr.account_id}")
        say(f"  ECR registry    {ecr.data_url}   plays {ecr.registry_host}; blobs redirect to S3")
        say(f"  GitLab registry {gl.registry_url}   JWTs from {gl.tokens.realm}, project {PROJECT}")
        say(f"  work dir        {work} (removed at the end)")

        step(f"2. Fill ECR: {len(images)} images in {len(repositories)} repositories, {len(refs)} signatures and SBOMs")
        seed(ecr, images)
        seed(ecr, refs)
        n_blobs, n_shared = distinct_blobs([*images, *refs])
        say(f"  {copied_tags} valid OCI tags to copy; {n_blobs} distinct blobs, {n_shared} of them needed again")
        say("  in other repositories. 'data/etl/nightly' is three levels deep: GitLab allows two below the")
        say("  project, so it becomes 'data/etl-nightly'.")
        ecr.reset_calls()
        ecr_calls: list[str] = []

        step("3. Dry run: the plan, the estimated size, and nothing written")
        env = ci_env(ecr, gl, work / "docker-config")
        (work / "docker-config").mkdir()
        show_env(env)
        say()
        gl.registry.reset()
        plan_path = work / "plan.json"
        run_cli(["migrate", "--dry-run", "--report", str(plan_path)], env)
        dry_writes = gl.registry.writes()
        dry_report = load_report(plan_path)
        planned = dry_report["totals"]["planned"]
        say(
            f"  plan.json: {planned} images planned; 'plan' says {dry_report['plan']['tags']} tags, "
            f"~{mb(dry_report['plan']['estimated_bytes'])} estimated, "
            f"{dry_report['plan']['already_present_bytes']} bytes already in GitLab"
        )
        checks.check(not dry_writes, f"the dry run wrote {len(dry_writes)} times to the GitLab registry")
        checks.check(planned == copied_tags, f"the dry run planned {planned} tags, expected {copied_tags}")

        say()
        say("  In GitLab CI, 'parallel: N' sets CI_NODE_INDEX/CI_NODE_TOTAL and each job takes its own share of")
        say("  the repositories, balanced by size (only the plan line of each dry run is shown):")
        shares: list[set[str]] = []
        for index in (1, 2):
            share_path = work / f"plan-{index}.json"
            share_env = {**env, "CI_NODE_INDEX": str(index), "CI_NODE_TOTAL": "2"}
            run_cli(["migrate", "--dry-run", "--quiet", "--report", str(share_path)], share_env, only="plan")
            shares.append({i["source"] for i in load_report(share_path)["images"]})
        everything = {i["source"] for i in dry_report["images"]}
        checks.check(
            not shares[0] & shares[1] and shares[0] | shares[1] == everything,
            "the two shards do not split the plan exactly",
        )
        say(
            f"  the two shares hold {len(shares[0])} + {len(shares[1])} of the {len(everything)} report entries,"
            " no overlap"
        )

        step("4. Migrate, with a JSON report and a JUnit report for GitLab's Tests tab")
        report_path, junit_path = work / "report.json", work / "junit.xml"
        gl.registry.reset()
        ecr_calls += ecr.calls
        ecr.reset_calls()
        ecr.data_proxy.reset()
        ecr.blob_server.reset()
        run_cli(["migrate", "--report", str(report_path), "--junit", str(junit_path)], env)
        uploads, mounts, manifest_puts = (
            gl.registry.blob_uploads(),
            len(gl.registry.mounts()),
            gl.registry.manifest_puts(),
        )
        upload_digests = [
            r.query
            for r in gl.registry.requests()
            if r.method == "PUT" and r.status == 201 and "/blobs/uploads/" in r.path
        ]
        report = load_report(report_path)
        totals, plan = report["totals"], report["plan"]

        step("5. Check the result")
        say("  a) every tag, fetched from both registries (manifest bytes, media type, digest, index children):")
        extra: dict[str, list[str]] = {}
        for ref in refs:
            if ref.tags:  # a cosign tag
                extra.setdefault(ref.repository, []).extend(ref.tags)
            elif ref.obj.subject is not None:
                extra.setdefault(ref.repository, []).append(fallback_tag(ref.obj.subject.digest))
        extra = {repo: sorted(set(tags)) for repo, tags in extra.items()}
        identical = verify_images(ecr, gl, images, checks, extra)
        say()
        say("  signatures and SBOMs, fetched from GitLab by digest, and the fallback tags that list them there:")
        check_referrers(gl, refs, checks)
        checks.check(totals["referrers_copied"] == len(refs), f"{totals['referrers_copied']} referrers copied")
        statuses = Counter((i["status"], i["reason"]) for i in report["images"])
        checks.check(report["ok"] is True, "the report says ok: false")
        checks.check(
            totals["copied"] == copied_tags, f"the report has {totals['copied']} copied, expected {copied_tags}"
        )
        checks.check(statuses[("skipped", "invalid_tag")] == 1, "the non-OCI tag was not reported skipped/invalid_tag")
        checks.check(
            plan["destinations"].get("data/etl/nightly") == "data/etl-nightly", "wrong name for data/etl/nightly"
        )

        say()
        say("  b) the report against the GitLab registry's own access log:")
        say(f"     {'':<28} {'report':>7} {'registry log':>13}")
        for label, mine, theirs in (
            ("blobs uploaded", totals["blobs_uploaded"], uploads),
            ("blobs mounted (not re-sent)", totals["blobs_mounted"], mounts),
            ("manifests pushed", totals["manifests_pushed"] + totals["referrer_tags_written"], len(manifest_puts)),
        ):
            say(f"     {label:<28} {mine:>7} {theirs:>13}")
            checks.check(mine == theirs, f"{label}: the report says {mine}, the registry log {theirs}")
        checks.check(uploads == n_blobs, f"{uploads} blob uploads for {n_blobs} distinct blobs")
        checks.check(len(set(upload_digests)) == len(upload_digests), "a blob was uploaded twice")
        say(f"     each of the {n_blobs} distinct blobs was uploaded once; shared layers were mounted")
        say(
            f"     {mb(totals['bytes_uploaded'])} uploaded; the plan estimated ~{mb(plan['estimated_bytes'])}"
            " from ECR's image sizes,\n     which count a shared layer once per image"
        )

        say()
        cases, failures, skipped = junit_counts(junit_path)
        say(f"  c) junit.xml: {cases} test cases, {failures} failures, {skipped} skipped (the non-OCI tag)")
        checks.check(cases == len(report["images"]) and failures == 0 and skipped == 1, "junit.xml disagrees")
        say(
            f"     report 'plan': {plan['repositories']} repositories, {plan['tags']} tags, {plan['untagged']} untagged"
            f" images, {plan['tags_invalid']} invalid tag, shard {plan['shard']}"
        )
        children = sum(len(i.obj.children) for i in images if isinstance(i.obj, Index))
        say(
            f"     ({plan['untagged']} untagged: the {children} platform images of the multi-arch indexes, copied with"
            f" their index;\n      {plan['untagged_referrers']} signatures and SBOMs, copied with their image; and"
            " the untagged shop/api build,\n      not copied: 'migrate --untagged tag' would copy it as"
            " untagged-<digest>.)"
        )
        untagged = sum(1 for i in images if not i.tags)
        untagged_refs = sum(1 for r in refs if not r.tags)
        checks.check(
            plan["untagged"] == children + untagged + untagged_refs,
            f"plan counts {plan['untagged']} untagged images, expected {children} index children + {untagged}"
            f" + {untagged_refs} referrers",
        )
        checks.check(
            (plan["untagged_index_children"], plan["untagged_standalone"], plan["untagged_referrers"])
            == (children, untagged, untagged_refs),
            "the plan told untagged images apart wrongly",
        )

        say()
        ecr_calls += ecr.calls
        calls = Counter(ecr.calls)
        say("  d) the ECR API calls of this run (the emulator records each one):")
        say("     " + ", ".join(f"{name} x{n}" for name, n in sorted(calls.items())))
        outside = sorted(set(ecr_calls) - ALLOWED_ACTIONS)
        checks.check(not outside, f"calls outside ecrcopy.ALLOWED_ACTIONS: {outside}")
        say(
            f"     all within ecrcopy.ALLOWED_ACTIONS, the {len(ALLOWED_ACTIONS)} read-only actions of"
            " docs/iam-policy.json"
        )
        redirected = sum(1 for r in ecr.data_proxy.requests if r.status == 307)
        s3 = len(ecr.blob_server.requests)
        say(f"     ECR data plane: {redirected} blob reads redirected to the S3 stand-in, which served {s3};")
        say(f"     {ecr.blob_server.rejected_auth} of them carried an Authorization header (S3 would refuse it)")
        checks.check(ecr.blob_server.rejected_auth == 0, "a request to S3 carried Authorization")

        step("6. Run the migration again: everything is up to date, nothing is written")
        gl.registry.reset()
        ecr.reset_calls()
        again_path = work / "again.json"
        run_cli(["migrate", "--quiet", "--report", str(again_path)], env)
        ecr_calls += ecr.calls
        again = load_report(again_path)
        writes = gl.registry.writes()
        again_status = Counter((i["status"], i["reason"]) for i in again["images"])
        checks.check(
            again_status == Counter({("skipped", "up-to-date"): copied_tags, ("skipped", "invalid_tag"): 1}),
            f"second run: {dict(again_status)}",
        )
        checks.check(
            not writes, f"the second run wrote to the GitLab registry: {[f'{w.method} {w.path}' for w in writes]}"
        )
        checks.check(not set(ecr_calls) - ALLOWED_ACTIONS, "calls outside ecrcopy.ALLOWED_ACTIONS")
        say(
            f"  {again_status[('skipped', 'up-to-date')]} skipped as up-to-date (one HEAD each), "
            f"{len(writes)} writes to the GitLab registry"
        )

        step("7. Verify: every tag, platform image, blob and signature is in GitLab (read-only)")
        gl.registry.reset()
        ecr.reset_calls()
        verify_path = work / "verify.json"
        run_cli(["verify", "--deep", "--quiet", "--report", str(verify_path)], env)
        ecr_calls += ecr.calls
        verified = load_report(verify_path)
        verify_writes = gl.registry.writes()
        checks.check(verified["ok"] is True, "verify found differences")
        checks.check(
            verified["totals"]["identical"] == copied_tags,
            f"verify: {verified['totals']['identical']} identical, expected {copied_tags}",
        )
        checks.check(not verify_writes, "verify wrote to the GitLab registry")
        say(
            f"  {verified['totals']['identical']} identical; {verified['totals']['checked']} manifests, blobs and"
            f" referrers checked with HEAD requests, {verified['totals']['absent']} absent; {len(verify_writes)} writes"
        )

        step("Summary")
        say(f"  ECR             {len(repositories)} repositories, {len(images)} images, {copied_tags} tags to copy")
        say(f"  dry run         {planned} planned, ~{mb(plan['estimated_bytes'])} estimated, {len(dry_writes)} writes")
        say(
            f"  migration       {totals['copied']} copied ({identical} byte-identical), 1 invalid tag skipped; "
            f"{uploads} blob uploads, {mounts} mounts, {len(manifest_puts)} manifest PUTs"
        )
        say(
            f"  signatures      {totals['referrers_copied']} signatures and SBOMs copied, "
            f"{totals['referrer_tags_written']} fallback tags written"
        )
        say(f"  second run      {again['totals']['skipped']} skipped, {len(writes)} writes")
        say(f"  verify --deep   {verified['totals']['identical']} identical, {verified['totals']['absent']} absent")
        say(f"  ECR API         {len(ecr_calls)} calls, all read-only: {', '.join(sorted(set(ecr_calls)))}")
        say(f"  took            {time.monotonic() - started:.1f} s")
    say(f"  stopped both emulators, removed {work}")
    if checks.failures:
        say()
        say(f"FAILED: {len(checks.failures)} check(s) did not match:")
        for failure in checks.failures:
            say(f"  - {failure}")
        return 1
    say()
    say("OK: every ECR tag and signature arrived in GitLab byte-exact, the report matches the registry, a rerun is")
    say("a no-op, and verify proves it.")
    say("Next: docs/migrating-from-ecr.md walks through the same migration in GitLab CI.")
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
        print("\ninterrupted: emulators stopped, temporary files removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
