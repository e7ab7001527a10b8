"""ecrcopy against ``skopeo sync`` on the same corpus, side by side, in one run.

Both tools copy the same repositories from a source registry (htpasswd) into fresh GitLab-like
registries (token auth), on loopback. Measured per tool: wall time, the client's CPU time
(user+sys of the tool's process tree, from ``getrusage(RUSAGE_CHILDREN)``), its peak RSS, and
what the destination registry's own access log shows: blob uploads, bytes uploaded, mounts.

    .venv/bin/python benchmarks/bench_vs_skopeo.py [--repos 6] [--tags 5] [--base-mib 24] [--out FILE]

The registries' own CPU is not counted: on a 2-core machine it dominates, and it is the same
for both tools.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from _harness import hwm_mb  # benchmarks/ is on sys.path when run as a script

from ecrcopy.testing import Blob, Image, Index, Registry, TokenServer, fetch_manifest, oci_image, oci_index, push

MiB = 1024 * 1024
SRC = ("alice", "bench-src-pw")
DST = ("bob", "bench-dst-pw")


@dataclass
class Result:
    tool: str
    wall: float
    cpu: float
    peak_rss_mb: float
    uploads: int
    uploaded_mb: float
    mounts: int
    ok: bool


def seed(source: Registry, repos: int, tags: int, base_mib: int) -> tuple[list[str], dict[tuple[str, str], str], int]:
    """Repositories on shared base layers; every third tag a two-platform index."""
    base = [Blob.generated(base_mib * MiB, seed=1), Blob.generated(base_mib * MiB // 2, seed=2)]
    names = [f"svc/app{r}" for r in range(repos)]
    digests: dict[tuple[str, str], str] = {}
    unique: dict[str, int] = {}
    for r, name in enumerate(names):
        for t in range(tags):
            seed_n = 1000 * r + t
            obj: Image | Index
            if t % 3 == 2:
                obj = oci_index(
                    [
                        oci_image([*base, 2 * MiB + seed_n], seed=seed_n, platform="linux/amd64"),
                        oci_image([*base, 2 * MiB + seed_n + 1], seed=seed_n + 500, platform="linux/arm64"),
                    ]
                )
            else:
                obj = oci_image([*base, 3 * MiB + seed_n], seed=seed_n)
            push(source.url, name, obj, f"v{t}", auth=SRC)
            digests[(name, f"v{t}")] = obj.digest
            for blob in obj.blobs:
                unique[blob.digest] = blob.size
    return names, digests, sum(unique.values())


def run_tool(tool: str, commands: list[list[str]], env: dict[str, str]) -> tuple[float, float, float, bool]:
    """Run commands one after another (as the tool is used): wall time, CPU of the children, peak RSS.

    Peak RSS is sampled from ``/proc/<pid>/status`` (VmHWM) while each command runs: ``ru_maxrss``
    would also count the pages of this (forking) process that were resident before ``exec``.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    ok = True
    peak = 0.0
    for command in commands:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        while proc.poll() is None:
            peak = max(peak, hwm_mb(proc.pid) or 0.0)
            time.sleep(0.01)
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            ok = False
            print(f"{tool} failed: {stderr[-800:]}", file=sys.stderr)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, peak, ok


#: skopeo first (the ratios are against it); the last one shows what looking for referrers costs
TOOLS = ("skopeo sync", "ecrcopy copy (CLI per repo)", "ecrcopy (one run)", "ecrcopy (one run, no-referrers)")

ECRCOPY_ONE_RUN = textwrap.dedent(
    """
    import sys, anyio, ecrcopy
    src, dst, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    options = ecrcopy.CopyOptions(referrers=sys.argv[4] == "referrers")
    async def main():
        async with ecrcopy.Copier(source_credentials=("alice", "bench-src-pw"),
                                  destination_credentials=("bob", "bench-dst-pw"), options=options) as copier:
            reports = []
            async def one(name):
                reports.append(await copier.copy_repository(f"{src}/{name}", f"{dst}/group/project/{name}"))
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(one, name)
        return all(r.ok for r in reports)
    sys.exit(0 if anyio.run(main) else 1)
    """
)


def measure(
    tool: str, workdir: Path, source: Registry, names: list[str], digests: dict[tuple[str, str], str]
) -> Result:
    with TokenServer(users={DST[0]: DST[1]}) as tokens, Registry(workdir / tool, token_auth=tokens) as dest:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECRCOPY_")}
        env["DOCKER_CONFIG"] = str(workdir / "empty-docker-config")
        env["XDG_CACHE_HOME"] = str(workdir / f"cache-{len(tool)}-{time.monotonic_ns()}")  # a cold cache per tool
        if tool == "skopeo sync":
            commands = [
                [
                    "skopeo", "sync", "--all", "--preserve-digests", "--src", "docker", "--dest", "docker",
                    "--src-tls-verify=false", "--dest-tls-verify=false",
                    "--src-creds", ":".join(SRC), "--dest-creds", ":".join(DST),
                    f"{source.host}/{name}", f"{dest.host}/group/project/{name.rsplit('/', 1)[0]}",
                ]
                for name in names
            ]  # fmt: skip
        elif tool == "ecrcopy copy (CLI per repo)":
            env["ECRCOPY_SRC_CREDS"] = ":".join(SRC)
            env["ECRCOPY_DEST_CREDS"] = ":".join(DST)
            commands = [
                [sys.executable, "-m", "ecrcopy", "copy", "-q", f"{source.host}/{n}", f"{dest.host}/group/project/{n}"]
                for n in names
            ]
        else:
            referrers = "no-referrers" if "no-referrers" in tool else "referrers"
            commands = [
                [sys.executable, "-c", ECRCOPY_ONE_RUN, source.host, dest.host, ",".join(names), referrers],
            ]
        dest.reset()
        wall, cpu, rss, ok = run_tool(tool, commands, env)
        log = dest.requests()
        uploads = [r for r in log if r.method == "PUT" and r.status == 201 and "/blobs/uploads/" in r.path]
        mounts = [r for r in log if r.method == "POST" and r.status == 201 and "mount=" in r.query]
        uploaded = sum(dest.blob_path(_digest(r.query)).stat().st_size for r in uploads)
        for (name, tag), digest in digests.items():
            got = fetch_manifest(dest.url, f"group/project/{name}", tag, auth=DST)[2]
            ok = ok and got == digest
        return Result(tool, wall, cpu, rss, len(uploads), uploaded / MiB, len(mounts), ok)


def _digest(query: str) -> str:
    for part in query.split("&"):
        if part.startswith("digest="):
            return part.split("=", 1)[1].replace("%3A", ":")
    raise ValueError(query)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=6)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--base-mib", type=int, default=24)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        print("skopeo is not installed: apt-get install -y skopeo", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ecrcopy-bench-"))
    (workdir / "empty-docker-config").mkdir()
    try:
        with Registry(workdir / "source", htpasswd={SRC[0]: SRC[1]}) as source:
            names, digests, unique_bytes = seed(source, args.repos, args.tags, args.base_mib)
            results = [measure(tool, workdir, source, names, digests) for tool in TOOLS]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    skopeo = results[0]
    lines = [
        f"Corpus: {args.repos} repositories x {args.tags} tags ({len(digests)} tags, every third a 2-platform "
        f"index), {unique_bytes / MiB:.0f} MiB of unique blobs on shared base layers. skopeo "
        f"{subprocess.run(['skopeo', '--version'], capture_output=True, text=True, check=False).stdout.split()[-1]}.",
        "",
        "| tool | wall s | speed-up | client CPU s | CPU vs skopeo | peak RSS MB | blob uploads | MiB uploaded "
        "| mounts | digests ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r.tool} | {r.wall:.1f} | {skopeo.wall / r.wall:.2f}x | {r.cpu:.1f} | {r.cpu / skopeo.cpu:.2f} | "
            f"{r.peak_rss_mb:.0f} | {r.uploads} | {r.uploaded_mb:.0f} | {r.mounts} | {'yes' if r.ok else 'NO'} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    print(json.dumps([r.__dict__ for r in results]), file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
