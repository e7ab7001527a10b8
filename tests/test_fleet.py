"""One upload per shared blob across the shards of a migration (``ecrcopy._fleet``).

Pure owner assignment (hypothesis), then real shards: ``ecrcopy migrate`` processes with GitLab's
``CI_NODE_INDEX``/``CI_NODE_TOTAL`` running at the same time against one GitLab emulation, each
with its own blob-location cache (separate machines share nothing but the registry).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ecrcopy
from ecrcopy._ecr import EcrApi
from ecrcopy._fleet import BlobOwner, FleetBlobs, assign_blob_owners, blobs_of_manifests
from ecrcopy._models import Manifest
from ecrcopy.testing import Blob, EcrEmulator, GitLabEmulator, oci_image, oci_index

from .test_migrate import cli_env, digest_at, migrate, source_digest

REPOS = [f"team/svc{i}" for i in range(6)]

names = st.text("abcdef", min_size=1, max_size=3)
digests = st.sampled_from([f"sha256:{c * 64}" for c in "0123456789"])


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[list[str]], dict[str, list[str]]]:
    repositories = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    total = draw(st.integers(1, 4))
    shards: list[list[str]] = [[] for _ in range(total)]
    for repository in repositories:
        shards[draw(st.integers(0, total - 1))].append(repository)
    blobs = {r: draw(st.lists(digests, max_size=5)) for r in repositories}
    return shards, blobs


@given(fleets(), st.randoms())
def test_owners_are_deterministic_shared_and_earliest(
    fleet: tuple[list[list[str]], dict[str, list[str]]], rnd: object
) -> None:
    shards, blobs = fleet
    owners = assign_blob_owners(shards, blobs)
    # the same whatever order the blob lists come in
    shuffled = list(blobs.items())
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert assign_blob_owners(shards, {r: list(reversed(d)) for r, d in shuffled}) == owners
    shard_of = {r: i for i, repos in enumerate(shards, start=1) for r in repos}
    position = {r: p for repos in shards for p, r in enumerate(repos)}
    users: dict[str, set[str]] = {}
    for repository, used in blobs.items():
        for digest in used:
            users.setdefault(digest, set()).add(repository)
    for digest, repositories in users.items():
        in_shards = {shard_of[r] for r in repositories}
        if len(in_shards) < 2:
            assert digest not in owners  # one shard uploads it once anyway
            continue
        owner = owners[digest]
        assert owner.repository in repositories and owner.shard == shard_of[owner.repository]
        first = min((position[r], shard_of[r], r) for r in repositories)
        assert (position[owner.repository], owner.shard, owner.repository) == first
    assert set(owners) <= set(users)


def test_fleet_waits_only_for_other_shards() -> None:
    fleet = FleetBlobs({"sha256:" + "a" * 64: BlobOwner(2, "p/x")}, shard=1, wait=10)
    assert fleet.owner_elsewhere("sha256:" + "a" * 64, "p/y") == BlobOwner(2, "p/x")
    assert fleet.owner_elsewhere("sha256:" + "a" * 64, "p/x") is None  # the owner's repository itself
    assert fleet.owner_elsewhere("sha256:" + "b" * 64, "p/y") is None
    assert FleetBlobs(fleet.owners, shard=2).owner_elsewhere("sha256:" + "a" * 64, "p/y") is None
    assert FleetBlobs(fleet.owners, shard=1, wait=0).owner_elsewhere("sha256:" + "a" * 64, "p/y") is None
    fleet.given_up.add(2)
    assert fleet.owner_elsewhere("sha256:" + "a" * 64, "p/y") is None


def test_blobs_of_manifests_reads_images_and_lists_index_children() -> None:
    amd, arm = oci_image([10, 20], seed=1, platform="linux/amd64"), oci_image([30], seed=2, platform="linux/arm64")
    index = oci_index([amd, arm])
    blobs, children = blobs_of_manifests(
        {
            index.digest: Manifest.from_bytes(index.raw, index.media_type),
            amd.digest: Manifest.from_bytes(amd.raw, amd.media_type),
        }
    )
    assert blobs == {b.digest for b in amd.blobs}
    assert children == {arm.digest}


def test_each_manifest_is_read_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index reader and the shards' blob planning share one BatchGetImage read per manifest."""
    with EcrEmulator(tmp_path / "ecr") as ecr:
        amd, arm = oci_image([10], seed=1, platform="linux/amd64"), oci_image([30], seed=2, platform="linux/arm64")
        index = oci_index([amd, arm])
        ecr.register_only("team/a", index, ["multi"])
        ecr.register_only("team/a", amd, ["amd"])
        for key, value in ecr.env().items():
            monkeypatch.setenv(key, value)
        api = EcrApi(ecrcopy.EcrSource.from_env())
        ecr.reset_calls()
        with api:
            first = api.parsed_manifests("team/a", [index.digest])
            assert set(first) == {index.digest} and first[index.digest].is_index
            assert ecr.calls.count("BatchGetImage") == 1
            both = api.manifests("team/a", [index.digest, amd.digest, index.digest])
            assert both == {index.digest: (index.raw, index.media_type), amd.digest: (amd.raw, amd.media_type)}
            assert ecr.calls.count("BatchGetImage") == 2  # only the amd64 manifest was still unread
            api.manifests("team/a", [amd.digest, index.digest])
            assert ecr.calls.count("BatchGetImage") == 2
            assert api.manifests("team/a", ["sha256:" + "0" * 64]) == {}  # unknown: left out


def seed_shared(ecr: EcrEmulator) -> set[str]:
    """Six repositories on two shared base layers; one multi-arch index. The unique blob digests."""
    base = [Blob.generated(300_000, seed=70), Blob.generated(200_000, seed=71)]
    unique: set[str] = set()
    for r, repo in enumerate(REPOS):
        for t in range(2):
            if r == 0 and t == 1:
                obj: ecrcopy.testing.Image | ecrcopy.testing.Index = oci_index(
                    [
                        oci_image([*base, 1000 + r], seed=100 + r, platform="linux/amd64"),
                        oci_image([base[0], 2000 + r], seed=200 + r, platform="linux/arm64"),
                    ]
                )
            else:
                obj = oci_image([*base, 3000 + 10 * r + t], seed=300 + 10 * r + t)
            ecr.add_image(repo, obj, [f"v{t}"])
            unique.update(b.digest for b in obj.blobs)
    return unique


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[EcrEmulator, set[str]]]:
    with EcrEmulator(tmp_path / "ecr") as ecr:
        unique = seed_shared(ecr)
        ecr.reset_calls()
        yield ecr, unique


def uploads(gl: GitLabEmulator) -> Counter[str]:
    """Digests of the completed blob uploads (monolithic or the closing PUT of a chunked one)."""
    done: Counter[str] = Counter()
    for r in gl.registry.requests():
        if r.method == "PUT" and r.status == 201 and "/blobs/uploads/" in r.path:
            query = dict(p.split("=", 1) for p in r.query.split("&") if "=" in p)
            done[query["digest"].replace("%3A", ":")] += 1
    return done


def test_concurrent_shards_upload_each_shared_blob_once(tmp_path: Path, shared: tuple[EcrEmulator, set[str]]) -> None:
    ecr, unique = shared
    with GitLabEmulator(tmp_path / "gitlab") as gl:
        procs = []
        for index in (1, 2, 3):
            env = cli_env(
                ecr, gl, CI_NODE_INDEX=str(index), CI_NODE_TOTAL="3", XDG_CACHE_HOME=str(tmp_path / f"c{index}")
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ecrcopy", "migrate", "--report", str(tmp_path / f"r{index}.json")],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    stdin=subprocess.DEVNULL,
                )
            )
        outputs = [p.communicate(timeout=300) for p in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
        done = uploads(gl)
        assert set(done) == unique
        assert all(n == 1 for n in done.values()), {d: n for d, n in done.items() if n > 1}
        reports = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in (1, 2, 3)]
        assert sum(r["totals"]["blobs_uploaded"] for r in reports) == len(unique)
        assert sum(r["totals"]["blobs_mounted"] for r in reports) > 0
        for repo in REPOS:
            for tag in ("v0", "v1"):
                assert digest_at(gl, repo, tag) == source_digest(ecr, repo, tag)
        assert all("BatchGetImage" not in err for _, err in outputs)  # no warning about reading the manifests
        assert "BatchGetImage" in ecr.calls


def test_a_shard_whose_owner_never_comes_uploads_after_the_bounded_wait(
    tmp_path: Path, shared: tuple[EcrEmulator, set[str]]
) -> None:
    ecr, unique = shared
    with GitLabEmulator(tmp_path / "gitlab") as gl:
        env = cli_env(ecr, gl, XDG_CACHE_HOME=str(tmp_path / "c2"))
        # shard 2 alone: shard 1 owns the shared base layers and never comes
        alone = migrate("--shard", "2/2", "--shard-wait", "1", "--report", str(tmp_path / "r2.json"), env=env)
        assert alone.returncode == 0, alone.stderr
        warnings = [line for line in alone.stderr.splitlines() if "did not upload" in line]
        assert len(warnings) == 1 and "within 1 s" in warnings[0]  # one wait, then no more
        late = migrate(
            "--shard", "1/2", "--report", str(tmp_path / "r1.json"), env={**env, "XDG_CACHE_HOME": str(tmp_path / "c1")}
        )
        assert late.returncode == 0, late.stderr
        reports = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in (1, 2)]
        assert set(uploads(gl)) == unique
        assert sum(r["totals"]["blobs_uploaded"] for r in reports) >= len(unique)
        for repo in REPOS:
            for tag in ("v0", "v1"):
                assert digest_at(gl, repo, tag) == source_digest(ecr, repo, tag)
