"""A hostile source registry: every scenario of ``ecrcopy.testing.HostileRegistry`` against the real CLI.

One process copies every hostile repository and a few good ones, as an overnight job would. It must
end by itself within a bound, copy the good images, fail each bad image with a one-line reason, write
its reports, print no traceback and keep its memory bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ecrcopy.testing import HostileRegistry, Registry, Scenario, fetch_manifest, oci_image, oci_index, push
from tests.conftest import DST_CREDS, DST_PASSWORD, SRC_CREDS, SRC_PASSWORD

pytestmark = pytest.mark.usefixtures("no_leaked_threads")

#: repositories whose tag listing itself is hostile: the copy of that repository ends with one error line
LISTING_SCENARIOS = {Scenario.ENDLESS_PAGINATION, Scenario.HUGE_TAG_PAGE}

DRIVER = textwrap.dedent(
    """
    import json, sys
    from ecrcopy._cli import main
    codes = {}
    for source, destination, report, junit in json.loads(sys.argv[1]):
        codes[source] = main(["copy", source, destination, "--report", report, "--junit", junit,
                              "--read-timeout", "5", "--retries", "2", "--concurrency", "4"])
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print("RESULT " + json.dumps({"codes": codes, "vmhwm_kb": int(status["VmHWM"].split()[0])}))
    """
)


def test_hostile_source_ends_by_itself_and_fails_only_bad_images(
    tmp_path: Path, source: Registry, gitlab: Registry
) -> None:
    good = {
        "good/one": oci_image([3000, 4000], seed=1),
        "good/multi": oci_index(
            [oci_image([5000], seed=2, platform="linux/amd64"), oci_image([6000], seed=3, platform="linux/arm64")]
        ),
    }
    for name, image in good.items():
        push(source.url, name, image, "v1", auth=SRC_CREDS)
    # the HOSTILE_HEADERS redirect goes to another origin (``storage``), which must never see credentials
    with HostileRegistry(source) as storage, HostileRegistry(source, redirect_origin=storage.url) as hostile:
        repos = hostile.add_all("hostile/")
        storage.add(repos[Scenario.HOSTILE_HEADERS].name, Scenario.HOSTILE_HEADERS)
        host = hostile.host
        runs = []
        names = [*good, *(r.name for r in repos.values())]
        for index, name in enumerate(names):
            runs.append(
                (
                    f"{host}/{name}",
                    f"{gitlab.host}/g/p/{name.replace('/', '-')}",
                    str(tmp_path / f"report-{index}.json"),
                    str(tmp_path / f"junit-{index}.xml"),
                )
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECRCOPY_")} | {
            "ECRCOPY_SRC_USERNAME": SRC_CREDS[0],
            "ECRCOPY_SRC_PASSWORD": SRC_PASSWORD,
            "ECRCOPY_DEST_USERNAME": DST_CREDS[0],
            "ECRCOPY_DEST_PASSWORD": DST_PASSWORD,
            "DOCKER_CONFIG": "/nonexistent-docker-config",
        }
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, json.dumps(runs)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
        assert hostile.credential_leaks == 0 and storage.credential_leaks == 0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert elapsed < 240, elapsed
    print(f"hostile run: {elapsed:.1f} s, peak RSS {result['vmhwm_kb'] // 1024} MiB")
    assert result["vmhwm_kb"] < 300 * 1024, result  # the million-tag page and endless bodies are cut off early

    for name in good:  # good images are copied byte for byte
        assert result["codes"][f"{host}/{name}"] == 0
        dst = f"g/p/{name.replace('/', '-')}"
        assert fetch_manifest(gitlab.url, dst, "v1", auth=DST_CREDS)[2] == good[name].digest

    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("ecrcopy: error: ")]
    for scenario, repo in repos.items():
        source_ref = f"{host}/{repo.name}"
        code = result["codes"][source_ref]
        index = names.index(repo.name)
        report_path = Path(runs[index][2])
        if scenario in LISTING_SCENARIOS:
            assert code == 1, (scenario, code)
            assert any(repo.name in line and "tags" in line for line in error_lines), (scenario, error_lines)
            continue
        assert code in (0, 1), (scenario, code)
        report = json.loads(report_path.read_text())
        ET.parse(runs[index][3])  # the JUnit file stays well-formed XML whatever the registry said
        assert report["images"], scenario
        for image in report["images"]:
            if image["status"] == "failed":
                error = image["error"]
                assert error and "\n" not in error and "\x1b" not in error, (scenario, error)
                assert all(ch.isprintable() for ch in error), (scenario, error)
                assert "Bearer" not in error or "fake" not in error.lower() or len(error) <= 1000
                assert image["reason"] != "internal_error", (scenario, error)  # each case has a named reason
            else:
                # what was copied is what the source really holds (true bytes, whatever the headers said)
                assert image["status"] == "copied", (scenario, image)
                tag = image["source"].rsplit(":", 1)[1]
                dst = f"g/p/{repo.name.replace('/', '-')}"
                assert fetch_manifest(gitlab.url, dst, tag, auth=DST_CREDS)[2] == image["digest"]
        # the scenarios that only lie must fail every image they serve
        if scenario in {
            Scenario.CYCLE,
            Scenario.SELF_CYCLE,
            Scenario.NON_DIGEST_CHILD,
            Scenario.UNKNOWN_ALGORITHM,
            Scenario.MISLABELLED_ALGORITHM,
            Scenario.DEEP_NESTING,
            Scenario.ENDLESS_MANIFEST,
            Scenario.ENDLESS_MANIFEST_HUGE_LENGTH,
            Scenario.ENDLESS_MANIFEST_CHUNKED,
            Scenario.ENDLESS_BLOB,
            Scenario.ENDLESS_ERROR,
            Scenario.HOSTILE_ERROR_TEXT,
        }:
            assert {i["status"] for i in report["images"]} == {"failed"}, (scenario, report["images"])
    for text in (proc.stdout, proc.stderr):
        assert SRC_PASSWORD not in text and DST_PASSWORD not in text
