"""ecrcopy against skopeo on the ECR -> GitLab migration, through the project's own emulations (issue 8).

    .venv/bin/python benchmarks/bench_ecr.py [--scenario c40|scale|large|shards|all] [--reps 3]
        [--repos 40] [--tags 4] [--scale-mib 238] [--scale-repos 200] [--scale-tags 50]
        [--large-mib 2048] [--shards 4] [--out FILE.md] [--json FILE.json] [--timeout 7200]

Smoke sizes (each well under two minutes)::

    .venv/bin/python benchmarks/bench_ecr.py --scenario c40 --reps 1 --repos 4 --tags 4 --scale-mib 8
    .venv/bin/python benchmarks/bench_ecr.py --scenario scale --reps 1 --scale-repos 10 --scale-tags 5
    .venv/bin/python benchmarks/bench_ecr.py --scenario large --reps 1 --large-mib 64
    .venv/bin/python benchmarks/bench_ecr.py --scenario shards --reps 1 --repos 8 --tags 4 --scale-mib 16

Set-up. The source is an :class:`~ecrcopy.testing.EcrEmulator` (moto's ECR API behind an ECR-like
front, a real ``docker-registry`` data plane behind a gate that wants Basic ``AWS:<password>``, blob
reads 307-redirected to an S3 stand-in), seeded once per corpus and reused by every run. Each run
writes into a fresh :class:`~ecrcopy.testing.GitLabEmulator` (new registry directory, new token
service, project ``acme/ecr-mirror``), which is removed afterwards. The two emulations run in two
server processes of their own (``_server.py``), so this process only starts the tools, samples them
and reads logs. Everything is on 127.0.0.1. How the corpora are written: ``_seed.py``.

The tools, each exactly as it is used:

* ``skopeo sync``: ``skopeo sync --all --preserve-digests --src docker --dest docker`` once per
  repository, ``<ECR data host>/<repo>`` into ``<GitLab host>/acme/ecr-mirror/<parent of repo>``,
  ``--src-tls-verify=false --dest-tls-verify=false``, credentials in an ``--authfile``: ``AWS:<password>``
  from the emulation's ``GetAuthorizationToken`` (taken before the run, so not in its numbers) and the
  GitLab job credentials. Each run has a private, initially empty skopeo home and blob info cache, shared
  by that run's per-repository processes. Skipped, with a notice, when ``skopeo`` is not installed.
* ``ecrcopy migrate``: the real CLI, ``python -m ecrcopy migrate --quiet --report FILE``, with exactly the
  variables of a GitLab CI job (the emulators' ``env()``: ``AWS_*``, ``CI_REGISTRY*``, plus the emulators'
  endpoint variables), an empty ``DOCKER_CONFIG`` and a fresh ``XDG_CACHE_HOME`` per run (no blob
  location cache carries over, not even into the no-op rerun: a rerun is a new CI job).

Scenarios:

* ``c40`` (the headline): ``--repos`` x ``--tags`` images ``team<r//5>/svc<r>:v<t>`` (default 40 x 4 =
  160), every 4th a two-platform OCI index; layers shared by every repository (OS and runtime, per
  platform: mounts matter), by a repository's tags (dependencies) and none (each platform image's own
  layer and config); ``--scale-mib`` unique MiB (default ~238 MiB in 484 unique blobs). Per repetition
  each tool copies into a fresh destination (full run), then runs again into that full destination (no-op
  rerun). ``--reps`` repetitions (default 3); the tools' order alternates between repetitions (odd: skopeo
  first). Tables show medians over the repetitions.
* ``scale``: ``--scale-repos`` x ``--scale-tags`` tiny images (default 200 x 50 = 10,000) written
  straight into the data plane's storage and registered in moto. ecrcopy only: ``migrate --dry-run``
  into an empty destination, the full copy, and a no-op rerun; a dry run and a no-op rerun must write
  nothing (any POST/PUT/PATCH/DELETE at the destination fails the benchmark).
* ``large``: one image whose single layer is ``--large-mib`` MiB (default 2048), streamed into storage;
  each tool copies it into a fresh destination (order alternating).
* ``shards``: the c40 corpus copied by ``--shards`` (default 4) ``ecrcopy migrate`` processes started
  at the same time with ``CI_NODE_INDEX=1..N`` and ``CI_NODE_TOTAL=N`` (GitLab's ``parallel:``), into
  one fresh destination, each with its own fresh ``XDG_CACHE_HOME`` (separate runners).

Columns:

* ``wall s``: from the start of the first process of the run to the exit of the last.
* ``client CPU s``: user+sys of the tool's processes, from ``getrusage(RUSAGE_CHILDREN)`` before and after
  (all of skopeo's per-repository processes; all shards).
* ``server CPU s ECR`` / ``GitLab``: user+sys, during the run, of everything serving it: the source server
  process (moto, the ECR API front, the data-plane gate, the S3 stand-in: all its threads) with its
  ``docker-registry``, and the destination server process (token service, the GitLab gate proxy) with its
  ``docker-registry``; from ``/proc/<pid>/stat`` (psutil) before and after. Idle CPU of the servers is
  measured once and printed; it is included in these numbers.
* ``peak RSS MB``: the largest ``VmHWM`` of any of the tool's processes, sampled every 10 ms.
* ``blob uploads / unique``: completed blob uploads at the destination (``PUT .../blobs/uploads/...``
  answered 201, from the destination registry's access log) / distinct blobs in the corpus.
* ``MiB uploaded / unique``: the sizes of the blobs whose upload completed, summed (a blob uploaded twice
  counts twice) / the corpus's unique blob bytes. Uploads abandoned before their final ``PUT`` do not show.
* ``mounts``: cross-repository mounts answered 201.
* ``digests ok``: every tag of the corpus is at the destination with the source's digest (its tag link in
  the destination registry's storage), every manifest below it (index children) is in that repository and
  hashes to its digest, every blob is linked there with the source's size; plus a few tags fetched over
  HTTP (token auth) from the destination.
* ``no-op ...``: the same for the rerun; ``writes``: POST/PUT/PATCH/DELETE requests at the destination.
* ratios are ecrcopy / skopeo of the medians (below 1: ecrcopy needs less).
* requests-by-kind tables: medians per run of the requests in each registry's log: manifest GET/HEAD/PUT,
  blob GET/HEAD, upload POST/PATCH/PUT/GET, mount POST (201 mounted / not mounted), tags/list, referrers,
  ``/v2/`` pings, token requests to the GitLab token service, ``(of which 401)`` (challenges and refusals),
  ``(refused by the gate: expired token)`` (only when there were any: GitLab's hard token expiry, answered
  by the gate in front of the registry); on the source side the ECR data plane as its gate saw them (blob
  reads answer 307), the S3 stand-in's requests and the ECR API actions. Rows in parentheses are not
  added to the totals.
* ``GitLab requests`` (scale): the destination registry's requests plus the token service's;
  ``ECR data-plane requests``: what the ECR data-plane gate answered (401 challenges included), ``S3
  requests``: redirected blob reads, ``ECR API calls``: control-plane actions.
* ``MiB/s`` (large): layer MiB / wall.
* ``bytes ratio`` (shards): MiB uploaded / unique MiB (target: at most 1.10).

Also printed: wall time per repetition (with the order the tools ran in), per-shard numbers from each
shard's own JSON report, and the servers' idle CPU. The raw numbers of every run go to ``--json`` (else
to stderr at the end): all of the above per run and per process, the load average before each run, the
orchestrator's own CPU during it (``harness_cpu``: sampling and polling, in no column), ecrcopy's report
totals, and the first problems found at the destination. Progress goes to stderr. ``--workdir`` sets
where the temporary directory goes (default ``$TMPDIR``; ``large`` needs about twice ``--large-mib``).
Exit status: 0 when every tool run succeeded and every check held; 1 otherwise (a tool failed, a digest
differed, a dry run or an ecrcopy no-op rerun wrote); 2 on a usage or set-up error; 130 on Ctrl-C. Temporary
directories and every process are cleaned up in all cases.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import importlib.util
import itertools
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _harness import (
    Checks,
    Command,
    Measured,
    ServerError,
    ServerProcess,
    blob_sizes,
    check_destination,
    count,
    destination_stats,
    ecr_password,
    ecrcopy_command,
    fmt,
    idle_cpu_rate,
    kill_running,
    measure,
    median,
    progress,
    ratio,
    skopeo_sync_commands,
    skopeo_version,
    source_stats,
    spot_check,
    table,
)

MiB = 1024 * 1024
PROJECT = "acme/ecr-mirror"
SKOPEO = "skopeo sync"
ECRCOPY = "ecrcopy migrate"


class Bench:
    """The server processes, the source in use, the work directory and everything measured so far."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.checks = Checks()
        self.src = ServerProcess("ECR")
        self.dst = ServerProcess("GitLab")
        self.source: dict[str, Any] = {}
        self.source_kind = ""
        self.corpus: dict[str, Any] = {}
        self.corpora: dict[str, dict[str, Any]] = {}
        self.records: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self.skopeo = skopeo_version()

    # -- set-up --------------------------------------------------------------------------------------

    def start_source(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        self.stop_source()
        self.source = self.src.call("start_ecr", workdir=str(self.workdir / f"ecr-{kind}"))
        self.source_kind = kind
        progress(f"seeding the ECR emulation ({kind}: {params})")
        self.corpus = self.src.call("seed", kind=kind, params=params)
        c = self.corpus
        self.corpora[kind] = {k: v for k, v in c.items() if k != "images"}
        progress(
            f"corpus {kind}: {c['repositories']} repositories, {c['tags']} images ({c['indexes']} indexes), "
            f"{c['manifests']} manifests, {c['unique_blobs']} unique blobs, {c['unique_bytes'] / MiB:.1f} MiB "
            f"unique; seeded in {c['seconds']:.1f} s, {c['pull_checked']} images pulled back and checked"
        )
        return c

    def stop_source(self) -> None:
        if self.source:
            self.src.call("stop_ecr")
            shutil.rmtree(self.workdir / f"ecr-{self.source_kind}", ignore_errors=True)
            self.source = {}

    def new_destination(self, name: str) -> dict[str, Any]:
        path = self.workdir / "dest" / f"{next(self._ids):03d}-{name}"
        info: dict[str, Any] = self.dst.call("start_gitlab", workdir=str(path), project=PROJECT)
        info["path"] = str(path)
        return info

    def drop_destination(self, dest: dict[str, Any]) -> None:
        self.dst.call("stop_gitlab")
        shutil.rmtree(dest["path"], ignore_errors=True)

    def home(self, name: str) -> Path:
        path = self.workdir / "homes" / f"{next(self._ids):03d}-{name}"
        path.mkdir(parents=True)
        return path

    # -- one measured phase --------------------------------------------------------------------------

    def repos(self) -> list[str]:
        return list(dict.fromkeys(image["repo"] for image in self.corpus["images"]))

    def tool_commands(self, tool: str, dest: dict[str, Any], name: str, extra: Sequence[str] = ()) -> list[Command]:
        home = self.home(name)
        if tool == SKOPEO:
            password = ecr_password(self.source)  # GetAuthorizationToken, outside the measured run
            return skopeo_sync_commands(self.source, dest, self.repos(), password, home)
        report = home / "report.json"
        argv = ["migrate", "--quiet", "--report", str(report), *self.args.ecrcopy_arg, *extra]
        command = ecrcopy_command(argv, self.source, dest, home, f"ecrcopy migrate ({name})")
        # py-spy samples without pausing the tool (pausing it at each sample made a 12 s run take
        # 97 s); its own CPU then counts in the client CPU column
        if self.args.profile is not None:
            self.args.profile.mkdir(parents=True, exist_ok=True)
            out = self.args.profile / f"{home.name}.{self.args.profile_format}"
            spy = [
                shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--nonblocking",
                "--rate",
                "250",
                "--format",
                self.args.profile_format,
                "--output",
                str(out),
                "--",
            ]
            command = dataclasses.replace(command, argv=[*spy, *command.argv])
        return [command]

    def phase(
        self,
        scenario: str,
        rep: int,
        tool: str,
        phase: str,
        dest: dict[str, Any],
        commands: list[Command],
        *,
        parallel: bool = False,
        verify: bool = True,
    ) -> dict[str, Any]:
        """Run one measured phase and return (and keep) its record."""
        self.src.call("reset_logs")
        self.dst.call("reset_logs")
        load = os.getloadavg()[0]
        m: Measured = measure(
            commands,
            servers=[self.src, self.dst],
            logdir=self.workdir / "logs" / f"{next(self._ids):03d}-{scenario}-{phase}",
            parallel=parallel,
            timeout=self.args.timeout,
        )
        dest_logs = self.dst.call("logs")
        src_logs = self.src.call("logs")
        images = self.corpus["images"]
        ds = destination_stats(dest_logs, blob_sizes(images), Path(dest["data_dir"]))
        problems: list[str] = []
        if verify:
            problems = check_destination(Path(dest["data_dir"]), dest["project"], images)
            if not problems:
                problems = spot_check(dest, images)
        reports = []
        for command in commands:
            if "--report" in command.argv:
                path = Path(command.argv[command.argv.index("--report") + 1])
                reports.append(json.loads(path.read_text()) if path.exists() else None)
        record: dict[str, Any] = {
            "scenario": scenario,
            "rep": rep,
            "tool": tool,
            "phase": phase,
            "loadavg_1m_before": load,
            "wall": m.wall,
            "client_cpu": m.client_cpu,
            "server_cpu": m.server_cpu,
            "server_cpu_total": m.server_cpu_total,
            "peak_rss_mb": m.peak_rss_mb,
            "harness_cpu": m.harness_cpu,
            "tool_ok": m.ok,
            "processes": [
                {"label": p.label, "returncode": p.returncode, "wall": p.wall, "peak_rss_mb": p.peak_rss_mb}
                for p in m.procs
            ],
            "verified": verify,
            "digests_ok": verify and not problems,
            "problems": problems[:20],
            "problem_count": len(problems),
            "uploads": ds.uploads,
            "duplicate_uploads": len(ds.uploaded_digests) - len(set(ds.uploaded_digests)),
            "bytes_uploaded": ds.bytes_uploaded,
            "mounts": ds.mounts,
            "writes": ds.writes,
            "tokens": ds.tokens,
            "token_failures": ds.token_failures,
            "dest_requests": dict(ds.requests),
            "dest_requests_total": sum(v for k, v in ds.requests.items() if not k.startswith("(")),
            "source_requests": dict(source_stats(src_logs)),
            "s3_requests_with_authorization": src_logs.get("ecr_s3_rejected_auth", 0),
            "reports": [
                {"ok": r.get("ok"), "totals": r.get("totals")} if isinstance(r, dict) else None for r in reports
            ],
        }
        src_req = record["source_requests"]
        record["ecr_data_requests"] = sum(v for k, v in src_req.items() if k.startswith("ECR data"))
        record["s3_requests"] = src_req.get("S3 GET/HEAD (redirected blob reads)", 0)
        record["ecr_api_calls"] = sum(v for k, v in src_req.items() if k.startswith("ECR API"))
        self.records.append(record)
        what = f"{scenario} rep {rep + 1}/{self.args.reps} {tool} {phase}"
        self.checks.check(m.ok, f"{what}: the tool failed")
        if verify:
            self.checks.check(not problems, f"{what}: destination differs from the source: {problems[:5]}")
        self.checks.check(record["s3_requests_with_authorization"] == 0, f"{what}: a request to S3 had Authorization")
        progress(
            f"{what}: {m.wall:.2f} s wall, client CPU {m.client_cpu:.2f} s, server CPU "
            f"{m.server_cpu['ECR']:.2f}+{m.server_cpu['GitLab']:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB, "
            f"{ds.uploads} uploads ({ds.bytes_uploaded / MiB:.1f} MiB), {ds.mounts} mounts, {ds.writes} writes"
            + (f", digests {'ok' if not problems else 'DIFFER'}" if verify else "")
        )
        return record

    def tools(self) -> list[str]:
        if self.skopeo is None:
            progress("NOTICE: skopeo is not installed (apt-get install -y skopeo): skopeo runs are skipped")
            return [ECRCOPY]
        return [SKOPEO, ECRCOPY]


# -- helpers for the tables --------------------------------------------------------------------------


def select(records: Sequence[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def med(records: Sequence[dict[str, Any]], key: str | Callable[[dict[str, Any]], float]) -> float:
    get: Callable[[dict[str, Any]], float] = key if callable(key) else (lambda r: float(r[key]))
    return median(get(r) for r in records)


def span(records: Sequence[dict[str, Any]], key: str) -> str:
    values = [float(r[key]) for r in records]
    if len(values) < 2:
        return ""
    return f" ({min(values):.2f}-{max(values):.2f})"


def all_ok(records: Sequence[dict[str, Any]]) -> str:
    if not records:
        return "n/a"
    return "yes" if all(r["tool_ok"] and r["digests_ok"] for r in records) else "NO"


def size_text(n: float) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.0f} KiB"


def corpus_line(corpus: dict[str, Any]) -> str:
    return (
        f"{corpus['repositories']} repositories, {corpus['tags']} tags ({corpus['indexes']} of them two-platform "
        f"OCI indexes), {corpus['manifests']} manifests, {corpus['unique_blobs']} unique blobs, "
        f"{size_text(corpus['unique_bytes'])} of unique blob bytes; seeded in {corpus['seconds']:.1f} s, "
        f"{corpus['pull_checked']} images pulled back through the ECR data plane and checked"
    )


def requests_table(groups: Sequence[tuple[str, list[dict[str, Any]]]], field: str) -> str:
    """Rows: request kinds (the union over ``groups``); columns: each group's median count per run."""
    names: list[str] = []
    for _, recs in groups:
        for r in recs:
            names.extend(k for k in r[field] if k not in names)
    names.sort(key=lambda k: (k.startswith("("), k))

    def of(recs: list[dict[str, Any]], name: str | None) -> str:
        def value(r: dict[str, Any]) -> float:
            counts: dict[str, int] = r[field]
            if name is None:
                return float(sum(v for k, v in counts.items() if not k.startswith("(")))
            return float(counts.get(name, 0))

        return count(med(recs, value))

    rows = [[name, *(of(recs, name) for _, recs in groups)] for name in names]
    rows.append(["**total**", *(of(recs, None) for _, recs in groups)])
    return table(["requests", *(label for label, _ in groups)], rows)


# -- scenarios ---------------------------------------------------------------------------------------


def c40_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"repos": args.repos, "tags": args.tags, "scale_mib": args.scale_mib}


def run_c40(bench: Bench) -> str:
    args, corpus = bench.args, bench.corpus
    tools = bench.tools()
    for rep in range(args.reps):
        order = tools if rep % 2 == 0 else tools[::-1]
        for tool in order:
            dest = bench.new_destination(f"c40-{rep}-{tool.split()[0]}")
            try:
                bench.phase("c40", rep, tool, "full", dest, bench.tool_commands(tool, dest, "c40-full"))
                rerun = bench.phase("c40", rep, tool, "no-op", dest, bench.tool_commands(tool, dest, "c40-noop"))
                if tool == ECRCOPY:
                    bench.checks.check(rerun["writes"] == 0, f"c40 rep {rep + 1}: the ecrcopy no-op rerun wrote")
            finally:
                bench.drop_destination(dest)
    recs = select(bench.records, scenario="c40")
    unique_mib = corpus["unique_bytes"] / MiB
    rows = []
    for tool in tools:
        full, noop = select(recs, tool=tool, phase="full"), select(recs, tool=tool, phase="no-op")
        rows.append(
            [
                tool,
                fmt(med(full, "wall"), 2) + span(full, "wall"),
                fmt(med(full, "client_cpu"), 2),
                fmt(med(full, lambda r: r["server_cpu"]["ECR"]), 2),
                fmt(med(full, lambda r: r["server_cpu"]["GitLab"]), 2),
                fmt(med(full, "peak_rss_mb"), 0),
                f"{count(med(full, 'uploads'))} / {corpus['unique_blobs']}",
                f"{fmt(med(full, 'bytes_uploaded') / MiB)} / {unique_mib:.1f}",
                count(med(full, "mounts")),
                all_ok(full),
                fmt(med(noop, "wall"), 2) + span(noop, "wall"),
                fmt(med(noop, "client_cpu"), 2),
                count(med(noop, "writes")),
                all_ok(noop),
            ]
        )
    out = [
        f"### c40: {corpus['tags']} images in {corpus['repositories']} repositories, ECR emulation -> fresh GitLab "
        f"emulation, medians of {args.reps} repetition(s)",
        "",
        f"Corpus: {corpus_line(corpus)}.",
        "",
        table(
            [
                "tool",
                "wall s",
                "client CPU s",
                "server CPU s ECR",
                "server CPU s GitLab",
                "peak RSS MB",
                "blob uploads / unique",
                "MiB uploaded / unique",
                "mounts",
                "digests ok",
                "no-op wall s",
                "no-op client CPU s",
                "no-op writes",
                "no-op digests ok",
            ],
            rows,
            "l" + "r" * 8 + "l" + "rrr" + "l",
        ),
    ]
    if SKOPEO in tools:
        s_full, e_full = select(recs, tool=SKOPEO, phase="full"), select(recs, tool=ECRCOPY, phase="full")
        s_noop, e_noop = select(recs, tool=SKOPEO, phase="no-op"), select(recs, tool=ECRCOPY, phase="no-op")
        out += [
            "",
            table(
                ["ecrcopy / skopeo", "wall", "client CPU", "server CPU (both sides)", "peak RSS", "no-op wall"],
                [
                    [
                        "ratio of medians",
                        ratio(med(e_full, "wall"), med(s_full, "wall")),
                        ratio(med(e_full, "client_cpu"), med(s_full, "client_cpu")),
                        ratio(med(e_full, "server_cpu_total"), med(s_full, "server_cpu_total")),
                        ratio(med(e_full, "peak_rss_mb"), med(s_full, "peak_rss_mb")),
                        ratio(med(e_noop, "wall"), med(s_noop, "wall")),
                    ]
                ],
            ),
        ]
    per_rep = []
    for rep in range(args.reps):
        row = [str(rep + 1), " then ".join(t.split()[0] for t in (tools if rep % 2 == 0 else tools[::-1]))]
        for tool in tools:
            for ph in ("full", "no-op"):
                r = select(recs, tool=tool, phase=ph, rep=rep)
                row.append(fmt(r[0]["wall"], 2) if r else "n/a")
        per_rep.append(row)
    out += [
        "",
        "Wall time per repetition (s):",
        "",
        table(["rep", "order", *(f"{t.split()[0]} {ph}" for t in tools for ph in ("full", "no-op"))], per_rep),
    ]
    groups = [(f"{t.split()[0]} {ph}", select(recs, tool=t, phase=ph)) for ph in ("full", "no-op") for t in tools]
    out += [
        "",
        "Requests at the destination (GitLab emulation's registry access log; token service), medians per run:",
        "",
        requests_table(groups, "dest_requests"),
        "",
        "Requests at the source (ECR emulation: data-plane gate, S3 stand-in, ECR API), medians per run:",
        "",
        requests_table(groups, "source_requests"),
    ]
    return "\n".join(out)


def run_shards(bench: Bench) -> str:
    args, corpus = bench.args, bench.corpus
    n = args.shards
    for rep in range(args.reps):
        dest = bench.new_destination(f"shards-{rep}")
        try:
            commands = []
            for index in range(1, n + 1):
                home = bench.home(f"shard-{index}")
                commands.append(
                    ecrcopy_command(
                        ["migrate", "--quiet", "--report", str(home / "report.json")],
                        bench.source,
                        dest,
                        home,
                        f"ecrcopy migrate shard {index}/{n}",
                        {"CI_NODE_INDEX": str(index), "CI_NODE_TOTAL": str(n)},
                    )
                )
            bench.phase("shards", rep, ECRCOPY, f"{n} shards", dest, commands, parallel=True)
        finally:
            bench.drop_destination(dest)
    recs = select(bench.records, scenario="shards")
    unique_mib = corpus["unique_bytes"] / MiB
    shard_walls = [[p["wall"] for p in r["processes"]] for r in recs]
    byte_ratio = med(recs, lambda r: r["bytes_uploaded"] / corpus["unique_bytes"])
    rows = [
        [
            f"{n} x ecrcopy migrate",
            fmt(med(recs, "wall"), 2) + span(recs, "wall"),
            f"{fmt(median(min(w) for w in shard_walls), 2)}-{fmt(median(max(w) for w in shard_walls), 2)}",
            fmt(med(recs, "client_cpu"), 2),
            fmt(med(recs, lambda r: r["server_cpu"]["ECR"]), 2),
            fmt(med(recs, lambda r: r["server_cpu"]["GitLab"]), 2),
            fmt(med(recs, "peak_rss_mb"), 0),
            f"{count(med(recs, 'uploads'))} / {corpus['unique_blobs']}",
            f"{fmt(med(recs, 'bytes_uploaded') / MiB)} / {unique_mib:.1f}",
            f"{byte_ratio:.2f}x ({'met' if byte_ratio <= 1.10 else 'NOT met'})",
            count(med(recs, "mounts")),
            f"{corpus['tags'] if all(r['digests_ok'] for r in recs) else 'NOT all'} / {corpus['tags']}",
            all_ok(recs),
        ]
    ]
    per_shard = []
    for index in range(n):
        totals = [r["reports"][index]["totals"] for r in recs if r["reports"][index] is not None]
        walls = [r["processes"][index]["wall"] for r in recs if len(r["processes"]) > index]

        def tot(key: str, totals: list[dict[str, Any]] = totals) -> float:
            return median(float(t.get(key, 0)) for t in totals)

        per_shard.append(
            [
                f"{index + 1}/{n}",
                fmt(median(walls), 2),
                count(tot("copied")),
                count(tot("blobs_uploaded")),
                fmt(tot("bytes_uploaded") / MiB),
                count(tot("blobs_mounted")),
                count(tot("blobs_existing")),
            ]
        )
    return "\n".join(
        [
            f"### shards: the c40 corpus by {n} concurrent `ecrcopy migrate` (CI_NODE_INDEX=1..{n}, "
            f"CI_NODE_TOTAL={n}) into one fresh destination, medians of {args.reps} repetition(s)",
            "",
            f"Corpus: {corpus_line(corpus)}.",
            "",
            table(
                [
                    "run",
                    "total wall s",
                    "shard wall s (fastest-slowest)",
                    "client CPU s (all shards)",
                    "server CPU s ECR",
                    "server CPU s GitLab",
                    "peak RSS MB (max shard)",
                    "blob uploads / unique",
                    "MiB uploaded / unique",
                    "bytes ratio (target ≤ 1.10)",
                    "mounts",
                    "tags arrived",
                    "ok",
                ],
                rows,
                "l" + "r" * 11 + "l",
            ),
            "",
            "Per shard (from each shard's own JSON report; medians):",
            "",
            table(
                ["shard", "wall s", "images copied", "blobs uploaded", "MiB uploaded", "mounted", "existing"], per_shard
            ),
            "",
            "Requests at the destination and the source, medians per run:",
            "",
            requests_table([("destination", recs)], "dest_requests"),
            "",
            requests_table([("source", recs)], "source_requests"),
        ]
    )


def run_scale(bench: Bench) -> str:
    args, corpus = bench.args, bench.corpus
    for rep in range(args.reps):
        dest = bench.new_destination(f"scale-{rep}")
        try:
            dry = bench.phase(
                "scale", rep, ECRCOPY, "dry run", dest,
                bench.tool_commands(ECRCOPY, dest, "scale-dry", ["--dry-run"]), verify=False,
            )  # fmt: skip
            bench.checks.check(dry["writes"] == 0, f"scale rep {rep + 1}: the dry run wrote {dry['writes']} times")
            bench.phase("scale", rep, ECRCOPY, "full copy", dest, bench.tool_commands(ECRCOPY, dest, "scale-full"))
            noop = bench.phase(
                "scale", rep, ECRCOPY, "no-op rerun", dest, bench.tool_commands(ECRCOPY, dest, "scale-noop")
            )
            bench.checks.check(
                noop["writes"] == 0, f"scale rep {rep + 1}: the no-op rerun wrote {noop['writes']} times"
            )
        finally:
            bench.drop_destination(dest)
    recs = select(bench.records, scenario="scale")
    rows = []
    for ph in ("dry run", "full copy", "no-op rerun"):
        r = select(recs, phase=ph)
        rows.append(
            [
                f"`ecrcopy migrate{' --dry-run' if ph == 'dry run' else ''}` ({ph})",
                fmt(med(r, "wall"), 2) + span(r, "wall"),
                fmt(med(r, "client_cpu"), 2),
                fmt(med(r, lambda x: x["server_cpu"]["ECR"]), 2),
                fmt(med(r, lambda x: x["server_cpu"]["GitLab"]), 2),
                fmt(med(r, "peak_rss_mb"), 0),
                f"{count(med(r, 'uploads'))} / {corpus['unique_blobs']}",
                count(med(r, "mounts")),
                count(med(r, "writes")),
                count(med(r, "dest_requests_total")),
                count(med(r, "ecr_data_requests")),
                count(med(r, "s3_requests")),
                count(med(r, "ecr_api_calls")),
                all_ok(r) if ph != "dry run" else ("yes" if all(x["tool_ok"] for x in r) else "NO"),
            ]
        )
    groups = [(ph, select(recs, phase=ph)) for ph in ("dry run", "full copy", "no-op rerun")]
    return "\n".join(
        [
            f"### scale: {corpus['tags']} tiny images in {corpus['repositories']} repositories, ecrcopy only, "
            f"medians of {args.reps} repetition(s)",
            "",
            f"Corpus: {corpus_line(corpus)}.",
            "",
            table(
                [
                    "step",
                    "wall s",
                    "client CPU s",
                    "server CPU s ECR",
                    "server CPU s GitLab",
                    "peak RSS MB",
                    "blob uploads / unique",
                    "mounts",
                    "GitLab writes",
                    "GitLab requests",
                    "ECR data-plane requests",
                    "S3 requests",
                    "ECR API calls",
                    "ok",
                ],
                rows,
                "l" + "r" * 12 + "l",
            ),
            "",
            "Requests by kind, medians per run:",
            "",
            requests_table(groups, "dest_requests"),
            "",
            requests_table(groups, "source_requests"),
        ]
    )


def run_large(bench: Bench) -> str:
    args, corpus = bench.args, bench.corpus
    tools = bench.tools()
    for rep in range(args.reps):
        for tool in tools if rep % 2 == 0 else tools[::-1]:
            dest = bench.new_destination(f"large-{rep}-{tool.split()[0]}")
            try:
                bench.phase("large", rep, tool, "copy", dest, bench.tool_commands(tool, dest, "large"))
            finally:
                bench.drop_destination(dest)
    recs = select(bench.records, scenario="large")
    layer_mib = max(size for _, size in corpus["images"][0]["blobs"]) / MiB
    rows = []
    for tool in tools:
        r = select(recs, tool=tool)
        rows.append(
            [
                tool,
                fmt(med(r, "wall"), 2) + span(r, "wall"),
                fmt(med(r, lambda x: layer_mib / x["wall"]), 0),
                fmt(med(r, "client_cpu"), 2),
                fmt(med(r, lambda x: x["server_cpu"]["ECR"]), 2),
                fmt(med(r, lambda x: x["server_cpu"]["GitLab"]), 2),
                fmt(med(r, "peak_rss_mb"), 0),
                count(med(r, "uploads")),
                fmt(med(r, "bytes_uploaded") / MiB),
                all_ok(r),
            ]
        )
    return "\n".join(
        [
            f"### large: one {layer_mib:.0f} MiB layer, ECR emulation -> fresh GitLab emulation, medians of "
            f"{args.reps} repetition(s)",
            "",
            table(
                [
                    "tool",
                    "wall s",
                    "MiB/s",
                    "client CPU s",
                    "server CPU s ECR",
                    "server CPU s GitLab",
                    "peak RSS MB",
                    "blob uploads",
                    "MiB uploaded",
                    "digests ok",
                ],
                rows,
                "l" + "r" * 8 + "l",
            ),
        ]
    )


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0], epilog="See the module docstring for every column."
    )
    parser.add_argument("--scenario", choices=("c40", "scale", "large", "shards", "all"), default="c40")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--repos", type=int, default=40, help="c40/shards: repositories (default 40)")
    parser.add_argument("--tags", type=int, default=4, help="c40/shards: tags per repository (default 4)")
    parser.add_argument("--scale-mib", type=float, default=238.0, help="c40/shards: unique blob MiB (default 238)")
    parser.add_argument("--scale-repos", type=int, default=200, help="scale: repositories (default 200)")
    parser.add_argument("--scale-tags", type=int, default=50, help="scale: tags per repository (default 50)")
    parser.add_argument("--large-mib", type=int, default=2048, help="large: layer size in MiB (default 2048)")
    parser.add_argument("--shards", type=int, default=4, help="shards: concurrent migrate processes (default 4)")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds before a tool process is killed")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write the raw numbers here (default: stderr)")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory (default: $TMPDIR)")
    parser.add_argument(
        "--ecrcopy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every 'ecrcopy migrate' (repeatable), e.g. --ecrcopy-arg=--http-backend=httpx",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run every 'ecrcopy migrate' under py-spy and write one profile per run into DIR "
        "(pip install py-spy; the timings and client CPU then include its sampling)",
    )
    parser.add_argument(
        "--profile-format", choices=("flamegraph", "speedscope", "raw"), default="flamegraph", help="py-spy's format"
    )
    args = parser.parse_args(argv)
    for name in ("reps", "repos", "tags", "scale_repos", "scale_tags", "large_mib", "shards"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.scale_mib <= 0:
        parser.error("--scale-mib must be positive")
    return args


def header(bench: Bench) -> str:
    args = bench.args
    return "\n".join(
        [
            f"## bench_ecr.py, {time.strftime('%Y-%m-%d %H:%M %Z')}",
            "",
            f"`{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}` on {platform.node()}: {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f} at start, Python {platform.python_version()}, skopeo "
            f"{bench.skopeo or 'not installed'}, {args.reps} repetition(s).",
        ]
    )


def run(args: argparse.Namespace) -> int:
    if shutil.which("docker-registry") is None:
        print("docker-registry is not installed: run .ci/setup (make test installs it)", file=sys.stderr)
        return 2
    # byte-compiled as an installed package is (pip compiles at install): with PYTHONDONTWRITEBYTECODE
    # set, every run would otherwise compile the modules changed since their .pyc was written
    spec = importlib.util.find_spec("ecrcopy")
    if spec is not None and spec.origin:
        compileall.compile_dir(str(Path(spec.origin).parent), quiet=1)
    workdir = Path(tempfile.mkdtemp(prefix="ecrcopy-bench-ecr-", dir=args.workdir))
    bench = Bench(args, workdir)
    sections: list[str] = []
    status = 1

    def emit(section: str) -> None:
        sections.append(section)
        print("\n" + section + "\n", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n\n".join(sections) + "\n")

    try:
        bench.src.start()
        bench.dst.start()
        emit(header(bench))
        wanted = {"c40", "scale", "large", "shards"} if args.scenario == "all" else {args.scenario}
        idle: dict[str, float] = {}
        if wanted & {"c40", "shards"}:
            bench.start_source("c40", c40_params(args))
            idle = measure_idle(bench)
            if "c40" in wanted:
                emit(run_c40(bench))
            if "shards" in wanted:
                emit(run_shards(bench))
        if "scale" in wanted:
            bench.start_source("scale", {"repos": args.scale_repos, "tags": args.scale_tags})
            idle = idle or measure_idle(bench)
            emit(run_scale(bench))
        if "large" in wanted:
            bench.start_source("large", {"mib": args.large_mib, "pull_sample": 1})
            idle = idle or measure_idle(bench)
            emit(run_large(bench))
        bench.stop_source()
        notes = [
            f"Idle CPU of the server processes (their poll loops), included in the server CPU columns: ECR side "
            f"{idle.get('ECR', 0) * 1000:.1f} ms/s, GitLab side {idle.get('GitLab', 0) * 1000:.1f} ms/s.",
        ]
        if bench.checks.failures:
            notes.append("**FAILED checks:** " + "; ".join(bench.checks.failures))
        emit("\n".join(notes))
        status = 1 if bench.checks.failures else 0
    except KeyboardInterrupt:
        progress("interrupted: stopping tools and emulators, removing temporary files")
        status = 130
    except Terminated:
        progress("terminated: stopping tools and emulators, removing temporary files")
        status = 143
    except ServerError as exc:
        progress(f"set-up failed: {exc}")
        status = 2
    finally:
        kill_running()
        for server in (bench.dst, bench.src):
            try:
                server.stop()
            except Exception as exc:  # keep cleaning up
                progress(f"stopping the {server.role} server: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)
        raw = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "skopeo": bench.skopeo,
            "cpus": os.cpu_count(),
            "corpora": bench.corpora,
            "failures": bench.checks.failures,
            "records": bench.records,
        }
        text = json.dumps(raw, indent=1, default=_json_default)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
        else:
            print(text, file=sys.stderr)
    return status


def measure_idle(bench: Bench) -> dict[str, float]:
    dest = bench.new_destination("idle")
    try:
        rate = idle_cpu_rate([bench.src, bench.dst])
    finally:
        bench.drop_destination(dest)
    progress(f"idle server CPU: ECR side {rate['ECR'] * 1000:.0f} ms/s, GitLab side {rate['GitLab'] * 1000:.0f} ms/s")
    return rate


def _json_default(value: Any) -> Any:
    if isinstance(value, Counter):
        return dict(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


class Terminated(BaseException):
    """SIGTERM arrived: clean up like on Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
