"""Planning is pure: filters, naming, collisions and sharding, property-tested."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecrcopy import ConfigurationError, MigrationOptions, Shard
from ecrcopy._plan import (
    EcrImage,
    EcrRepository,
    build_plan,
    default_destination_name,
    map_repository_name,
    parse_shard,
    recount_untagged,
    shard_repositories,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _image(n: int, *tags: str, size: int = 100, days: int = 0) -> EcrImage:
    return EcrImage(f"sha256:{n:064x}", tuple(tags), size, T0 + timedelta(days=days))


def test_default_name_rule_keeps_two_levels() -> None:
    assert default_destination_name("app") == "app"
    assert default_destination_name("team/app") == "team/app"
    assert default_destination_name("team/backend/api") == "team/backend-api"
    assert default_destination_name("a/b/c/d") == "a/b-c-d"


def test_template_and_mapping() -> None:
    assert map_repository_name("team/backend/api", template="{repo_flat}") == "team-backend-api"
    assert map_repository_name("team/backend/api", template="mirror/{name}") == "mirror/api"
    assert map_repository_name("team/backend/api", template="{first}/{name}") == "team/api"
    assert map_repository_name("x/y", template="{repo}", mapping={"x/y": "/special/"}) == "special"
    with pytest.raises(ValueError, match="unknown placeholder"):
        MigrationOptions(name_template="{nope}")


def test_collision_and_invalid_names_rejected() -> None:
    repos = [EcrRepository("a/b/c", (_image(1, "v1"),)), EcrRepository("a/b-c", (_image(2, "v1"),))]
    with pytest.raises(ConfigurationError, match="a/b-c, a/b/c all map to a/b-c"):
        build_plan(repos, MigrationOptions())
    with pytest.raises(ConfigurationError, match="not a valid repository path"):
        build_plan([EcrRepository("ok", (_image(1, "v1"),))], MigrationOptions(mapping={"ok": "Bad_Name!"}))
    with pytest.raises(ConfigurationError, match="levels deep"):
        build_plan([EcrRepository("ok", (_image(1, "v1"),))], MigrationOptions(mapping={"ok": "a/b/c"}))


def test_invalid_tags_skipped_untagged_counted() -> None:
    long_tag = "x" * 200
    repo = EcrRepository("svc", (_image(1, "v1", "bad tag!", long_tag), _image(2), _image(3, ".hidden")))
    plan = build_plan([repo], MigrationOptions())
    assert [(p.tag, p.digest) for p in plan.images] == [("v1", f"sha256:{1:064x}")]
    assert sorted(s.tag for s in plan.skipped) == sorted([".hidden", "bad tag!", long_tag])
    assert {s.reason for s in plan.skipped} == {"invalid_tag"}
    assert plan.summary.untagged == 1
    assert plan.summary.tags_invalid == 3


def test_filters() -> None:
    repos = [
        EcrRepository("team/a", (_image(1, "v1", days=1), _image(2, "v2", "latest", days=5), _image(3, "dev", days=9))),
        EcrRepository("team/b", (_image(4, "v1", days=2),)),
        EcrRepository("other/c", (_image(5, "v1", days=3),)),
    ]
    plan = build_plan(repos, MigrationOptions(include=("team/.*",), exclude=("team/b",)))
    assert {p.repository for p in plan.images} == {"team/a"}
    assert plan.summary.repositories_excluded == 2
    newest = build_plan(repos, MigrationOptions(include=("team/a",), newest=2))
    assert sorted(p.tag for p in newest.images) == ["dev", "latest", "v2"]
    since = build_plan(repos, MigrationOptions(pushed_since=T0 + timedelta(days=3)))
    assert sorted((p.repository, p.tag) for p in since.images) == [
        ("other/c", "v1"),
        ("team/a", "dev"),
        ("team/a", "latest"),
        ("team/a", "v2"),
    ]
    tags = build_plan(repos, MigrationOptions(tag_pattern="v[0-9]+"))
    assert sorted({p.tag for p in tags.images}) == ["v1", "v2"]
    assert tags.summary.estimated_bytes == 400  # image 2 counted once although it has two tags... only v2 kept


def test_parse_shard() -> None:
    assert parse_shard("2/4") == Shard(2, 4)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(ConfigurationError):
            parse_shard(bad)


weights_strategy = st.dictionaries(
    st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8})?", fullmatch=True), st.integers(0, 10**9), max_size=40
)


@settings(max_examples=200)
@given(weights=weights_strategy, total=st.integers(1, 8))
def test_sharding_properties(weights: dict[str, int], total: int) -> None:
    shards = shard_repositories(weights, total)
    assert len(shards) == total
    flat = [name for shard in shards for name in shard]
    assert sorted(flat) == sorted(weights)  # disjoint and complete
    if any(len(s) >= 2 for s in shards):
        assert all(shards), "a shard is empty while another holds two or more repositories"
    assert shard_repositories(dict(reversed(list(weights.items()))), total) == shards  # order-independent
    if weights and total > 1:
        loads = [sum(weights[n] for n in s) for s in shards]
        # greedy bound: the heaviest shard exceeds the lightest by at most the largest single repository
        assert max(loads) - min(loads) <= max(weights.values())


@settings(max_examples=50)
@given(n=st.integers(1, 30), total=st.integers(1, 6))
def test_plans_of_all_shards_cover_every_image_once(n: int, total: int) -> None:
    repos = [EcrRepository(f"svc{i}", (_image(i, "v1", size=i * 1000), _image(1000 + i, "v2"))) for i in range(n)]
    seen: list[tuple[str, str]] = []
    for index in range(1, total + 1):
        plan = build_plan(repos, MigrationOptions(shard=Shard(index, total)))
        seen.extend((p.repository, p.tag) for p in plan.images)
    assert sorted(seen) == sorted((f"svc{i}", t) for i in range(n) for t in ("v1", "v2"))


def test_tag_filter_applies_before_tag_validation_and_counts_are_per_shard() -> None:
    repo = EcrRepository("svc", (_image(1, "v1", "bad tag!"), _image(2)))
    plan = build_plan([repo], MigrationOptions(tag_pattern="v[0-9]+"))
    assert [p.tag for p in plan.images] == ["v1"] and plan.skipped == []
    repos = [EcrRepository(f"r{i}", (_image(i, "v1", size=10 + i), _image(100 + i))) for i in range(4)]
    shares = [build_plan(repos, MigrationOptions(shard=Shard(i, 2))).summary for i in (1, 2)]
    assert [s.untagged for s in shares] == [2, 2]


def test_destination_depth_counts_from_the_project() -> None:
    from ecrcopy import GitLabDestination

    env = {"CI_REGISTRY_IMAGE": "registry.example.com/group/project", "CI_PROJECT_PATH": "Group/Project"}
    assert GitLabDestination.from_env(env).levels_below_project() == 0
    deeper = GitLabDestination.from_env(env, image_prefix="registry.example.com/group/project/mirror")
    assert deeper.levels_below_project() == 1
    assert GitLabDestination.from_env({"CI_REGISTRY_IMAGE": "r.example.com/a/b"}).levels_below_project() == 0
    with pytest.raises(ConfigurationError, match="CI_REGISTRY_IMAGE"):
        GitLabDestination.from_env({})
    job_token = GitLabDestination.from_env({"CI_REGISTRY_IMAGE": "r.example.com/a/b", "CI_JOB_TOKEN": "tok-123"})
    assert job_token.username == "gitlab-ci-token" and "tok-123" not in repr(job_token)


def test_migration_options_from_env() -> None:
    assert MigrationOptions.from_env({}).shard == Shard(1, 1)
    assert MigrationOptions.from_env({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "4"}).shard == Shard(3, 4)
    explicit = MigrationOptions.from_env({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "4"}, shard=Shard(1, 2), newest=5)
    assert explicit.shard == Shard(1, 2) and explicit.newest == 5
    with pytest.raises(ConfigurationError, match="shard"):
        MigrationOptions.from_env({"CI_NODE_INDEX": "5", "CI_NODE_TOTAL": "4"})
    with pytest.raises(ConfigurationError, match="newest"):
        MigrationOptions.from_env({}, newest=0)


@st.composite
def _repositories_with_indexes(draw: st.DrawFn) -> list[EcrRepository]:
    """Repositories whose untagged images are index children, referrers and standalone images."""
    repositories = []
    n = 0
    for r in range(draw(st.integers(1, 4))):
        images: list[EcrImage] = []
        children: dict[str, tuple[str, ...]] = {}
        for _ in range(draw(st.integers(0, 5))):
            n += 1
            kind = draw(st.sampled_from(["tagged", "index", "standalone", "referrer"]))
            digest = f"sha256:{n:064x}"
            if kind == "index":
                kids = []
                for _ in range(draw(st.integers(1, 3))):
                    n += 1
                    kids.append(f"sha256:{n:064x}")
                    images.append(EcrImage(kids[-1], (), 10, T0))
                tags = (f"i{n}",) if draw(st.booleans()) else ()
                images.append(EcrImage(digest, tags, 10, T0, media_type="application/vnd.oci.image.index.v1+json"))
                children[digest] = tuple(kids)
            elif kind == "referrer":
                subject = images[0].digest if images else digest
                images.append(EcrImage(digest, (), 10, T0, subject_digest=subject))
            else:
                images.append(EcrImage(digest, (f"t{n}",) if kind == "tagged" else (), 10, T0))
        repositories.append(EcrRepository(f"team/svc{r}", tuple(images), children))
    return repositories


@settings(max_examples=150, deadline=None)
@given(repositories=_repositories_with_indexes(), shard=st.sampled_from([Shard(1, 1), Shard(1, 2), Shard(2, 2)]))
def test_untagged_counts_recounted_from_indexes_read_later_equal_the_plan_made_with_them(
    repositories: list[EcrRepository], shard: Shard
) -> None:
    """A migration with ``untagged: skip`` plans before reading the indexes and recounts while it
    copies: the recount must be exactly the plan it would have made with the indexes read."""
    options = MigrationOptions(shard=shard)
    unread = [dataclasses.replace(r, index_children={}) for r in repositories]
    early = build_plan(unread, options)
    complete = build_plan(repositories, options)
    assert early.images == complete.images and early.destinations == complete.destinations
    mine = [r for r in repositories if r.name in early.destinations]
    assert recount_untagged(early.summary, mine, options) == complete.summary
