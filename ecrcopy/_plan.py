"""Migration planning: filters, name mapping, validation and sharding. No I/O.

Input is the ECR inventory (repositories with their images' tags, digests, sizes and push dates);
output is a :class:`Plan` — every (repository, tag) to copy and where to, plus what was left out
and why. Everything here is deterministic, so every CI shard computes the same plan on its own.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._exceptions import ConfigurationError, validation_summary
from ._mediatypes import INDEX_TYPES
from ._reference import is_valid_repository, is_valid_tag
from ._referrers import ReferrerHints, subject_of_tag, untagged_tag
from ._report import Count

__all__ = [
    "EcrImage",
    "EcrRepository",
    "MigrationOptions",
    "Plan",
    "PlanSummary",
    "PlannedImage",
    "Shard",
    "SkippedTag",
    "UntaggedKinds",
    "UntaggedPolicy",
    "build_plan",
    "classify_untagged",
    "default_destination_name",
    "map_repository_name",
    "parse_shard",
    "recount_untagged",
    "referrer_hints",
    "select_repositories",
    "shard_order",
    "shard_repositories",
]


@dataclass(frozen=True)
class EcrImage:
    """One image of an ECR repository, as DescribeImages tells it."""

    digest: str
    tags: tuple[str, ...] = ()
    size: int | None = None
    pushed_at: datetime | None = None
    media_type: str | None = None
    artifact_media_type: str | None = None
    subject_digest: str | None = None
    #: ECR's storage class state: ``ACTIVE``, ``ARCHIVED`` (cannot be pulled) or ``ACTIVATING`` (being restored)
    status: str = "ACTIVE"


@dataclass(frozen=True)
class EcrRepository:
    name: str
    images: tuple[EcrImage, ...] = ()
    #: index digest -> digests its manifest lists (read from the registry: DescribeImages does not say)
    index_children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def needs_index_children(self) -> bool:
        """Whether telling index children from untagged standalone images needs the indexes read."""
        return any(not i.tags and not i.subject_digest for i in self.images) and any(
            (i.media_type or "") in INDEX_TYPES and i.status == "ACTIVE" for i in self.images
        )


@dataclass(frozen=True)
class UntaggedKinds:
    """The untagged images of a repository, by what they are (ECR lists all three as untagged)."""

    standalone: tuple[EcrImage, ...] = ()
    index_children: int = 0
    referrers: int = 0


def classify_untagged(repository: EcrRepository) -> UntaggedKinds:
    """Untagged images: referrers (``subjectManifestDigest``, and what a referrer index lists), index
    children (listed by an index of the repository, at any depth) and the rest, standalone images."""
    referrers = {i.digest for i in repository.images if i.subject_digest}
    listed: set[str] = set()
    pending = [d for d in repository.index_children if d in referrers]
    while pending:  # what a referrer index lists belongs to the referrer
        for child in repository.index_children.get(pending.pop(), ()):
            if child not in referrers:
                referrers.add(child)
                pending.append(child)
    for parent, children in repository.index_children.items():
        if parent not in referrers:
            listed.update(children)
    untagged = [i for i in repository.images if not i.tags]
    return UntaggedKinds(
        standalone=tuple(i for i in untagged if i.digest not in referrers and i.digest not in listed),
        index_children=sum(1 for i in untagged if i.digest in listed and i.digest not in referrers),
        referrers=sum(1 for i in untagged if i.digest in referrers),
    )


def referrer_hints(repository: EcrRepository) -> ReferrerHints:
    """What ECR's listing already says of a repository's referrers, so none needs discovering."""
    subjects: dict[str, list[str]] = {}
    for image in sorted(repository.images, key=lambda i: i.digest):
        if image.subject_digest:
            subjects.setdefault(image.subject_digest, []).append(image.digest)
    return ReferrerHints(
        tags=frozenset(t for i in repository.images for t in i.tags),
        subjects={subject: tuple(digests) for subject, digests in subjects.items()},
        unavailable={i.digest: i.status.lower() for i in repository.images if i.status != "ACTIVE"},
    )


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``total``."""

    index: int = 1
    total: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.index <= self.total):
            raise ConfigurationError(f"shard {self.index}/{self.total}: need 1 <= I <= N")

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ConfigurationError(f"shard {text!r}: use I/N, for example 2/4")
    return Shard(int(match[1]), int(match[2]))


#: Untagged standalone images: left out (counted in the plan), or copied under ``untagged-<hex>``.
UntaggedPolicy = Literal["skip", "tag"]

_TEMPLATE_FIELDS = ("repo", "repo_flat", "name", "namespace", "namespace_flat", "first")


class MigrationOptions(BaseModel):
    """What to migrate and where: filters, naming, sharding."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    include: tuple[str, ...] = Field((), description="regexes; a repository must fully match one (none: all)")
    exclude: tuple[str, ...] = Field((), description="regexes; a repository fully matching one is left out")
    tag_pattern: str | None = Field(None, description="regex a tag must fully match")
    newest: int | None = Field(None, ge=1, description="per repository, only the N most recently pushed images")
    pushed_since: datetime | None = Field(None, description="only images pushed at or after this time")
    name_template: str | None = Field(
        None, description="destination path below the prefix, e.g. '{repo_flat}' or 'mirror/{name}'"
    )
    mapping: dict[str, str] = Field(default_factory=dict, description="explicit ECR repository -> destination path")
    max_depth: int = Field(2, ge=1, description="path levels allowed below the project (GitLab: 2)")
    shard: Shard = Field(default_factory=Shard)
    shard_wait: float = Field(
        300.0,
        ge=0,
        description="sharded runs: longest wait, in seconds, for the shard that owns a shared blob to upload it "
        "(then mounted from there) before uploading it here; 0 uploads without waiting",
    )
    untagged: UntaggedPolicy = Field(
        "skip",
        description="untagged standalone images (not index children, not referrers): skip (counted in the "
        "plan) or tag (copied and tagged untagged-<hex of the digest> so GitLab keeps them)",
    )
    referrers: bool = Field(
        True, description="cosign's sha256-<hex>.sig/.att/.sbom tags follow their subject, not the tag filter"
    )
    dry_run: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> MigrationOptions:
        """The shard from GitLab's ``parallel:`` (``CI_NODE_INDEX``/``CI_NODE_TOTAL``); kwargs win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if env.get("CI_NODE_TOTAL"):
            values["shard"] = parse_shard(f"{env.get('CI_NODE_INDEX') or '1'}/{env['CI_NODE_TOTAL']}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigurationError(f"migration option {validation_summary(exc)}") from None

    @field_validator("include", "exclude")
    @classmethod
    def _valid_regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            _compile(pattern, "repository filter")
        return value

    @field_validator("tag_pattern")
    @classmethod
    def _valid_tag_regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value, "tag pattern")
        return value

    @field_validator("pushed_since")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("name_template")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        for _, name, spec, conv in string.Formatter().parse(value):
            if name is not None and (name not in _TEMPLATE_FIELDS or spec or conv):
                raise ValueError(f"unknown placeholder {{{name}}}; use one of " + ", ".join(_TEMPLATE_FIELDS))
        return value


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(f"invalid {what} {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class PlannedImage:
    repository: str  # ECR repository
    tag: str
    digest: str
    destination: str  # path below the destination prefix
    size: int | None = None
    pushed_at: datetime | None = None
    #: an untagged standalone image, pulled by digest, tagged :func:`untagged_tag` at the destination
    untagged: bool = False


@dataclass(frozen=True)
class SkippedTag:
    repository: str
    tag: str
    digest: str
    reason: str


class PlanSummary(BaseModel):
    """The plan in numbers, stored in the report."""

    repositories: Count = 0
    repositories_total: Count = 0
    repositories_excluded: Count = 0
    images: Count = 0
    tags: Count = 0
    untagged: Count = Field(
        0, description="untagged ECR images: index children, referrers and standalone images (not copied alone)"
    )
    untagged_standalone: Count = Field(0, description="untagged images that are neither index children nor referrers")
    untagged_index_children: Count = Field(0, description="untagged images an index lists (copied with their index)")
    untagged_referrers: Count = Field(
        0, description="untagged referrers (signatures, SBOMs; copied with their subject)"
    )
    untagged_skipped: dict[str, Count] = Field(
        default_factory=dict,
        description="per repository, untagged standalone images not copied (untagged='skip'; 'tag' copies them)",
    )
    untagged_tagged: Count = Field(0, description="untagged standalone images to copy under untagged-<hex>")
    referrers: Count = Field(
        0,
        description="referrers in ECR's listing (subjectManifestDigest) and cosign tags, copied with their subject",
    )
    tags_filtered: Count = 0
    tags_invalid: Count = 0
    tags_archived: Count = Field(
        0, description="tags of images in ECR's archive storage class (or being restored): skipped, not pullable"
    )
    estimated_bytes: Count = 0
    already_present_bytes: Count | None = Field(None, description="dry run: bytes of tags already at the destination")
    shard: str = "1/1"
    destinations: dict[str, str] = Field(default_factory=dict, description="ECR repository -> destination path")

    @classmethod
    def merge(cls, summaries: Sequence[PlanSummary]) -> PlanSummary:
        """The plans of several shards as one: their counts added, the registry-wide ones kept.

        ``repositories_total`` and ``repositories_excluded`` describe the whole registry (every shard
        has the same); ``shard`` lists the shards merged (``1/4,2/4``). One summary is returned as is.
        """
        if len(summaries) == 1:
            return summaries[0].model_copy(deep=True)
        merged = cls()
        if not summaries:
            return merged
        registry_wide = {"repositories_total", "repositories_excluded", "shard", "destinations", "untagged_skipped"}
        registry_wide |= {"already_present_bytes"}
        for name in cls.model_fields:
            if name not in registry_wide:
                setattr(merged, name, sum(getattr(s, name) for s in summaries))
        merged.repositories_total = max(s.repositories_total for s in summaries)
        merged.repositories_excluded = max(s.repositories_excluded for s in summaries)
        present = [s.already_present_bytes for s in summaries]
        merged.already_present_bytes = None if None in present else sum(p or 0 for p in present)
        merged.shard = ",".join(sorted({part for s in summaries for part in s.shard.split(",")}, key=shard_order))
        merged.destinations = dict(sorted({k: v for s in summaries for k, v in s.destinations.items()}.items()))
        merged.untagged_skipped = dict(sorted({k: v for s in summaries for k, v in s.untagged_skipped.items()}.items()))
        return merged


def shard_order(shard: str) -> tuple[int, str]:
    """Sort key of ``"2/4"``-style shard names: by index, then by text."""
    index = shard.partition("/")[0]
    return (int(index), shard) if index.isdigit() else (0, shard)


@dataclass
class Plan:
    images: list[PlannedImage] = field(default_factory=list)
    skipped: list[SkippedTag] = field(default_factory=list)
    destinations: dict[str, str] = field(default_factory=dict)
    summary: PlanSummary = field(default_factory=PlanSummary)
    #: every shard's ECR repositories, each in the order that shard copies them (this one included)
    shards: list[list[str]] = field(default_factory=list)
    #: the planned images of every shard's repositories, and their destinations (for blob owners)
    fleet_images: dict[str, list[PlannedImage]] = field(default_factory=dict)
    fleet_destinations: dict[str, str] = field(default_factory=dict)


def default_destination_name(repository: str, max_depth: int = 2) -> str:
    """Keep names up to ``max_depth`` levels; join the deeper levels with ``-``.

    ``team/backend/api`` → ``team/backend-api``; ``a/b/c/d`` → ``a/b-c-d``; ``app`` → ``app``.
    """
    parts = repository.split("/")
    if len(parts) <= max_depth:
        return repository
    return "/".join([*parts[: max_depth - 1], "-".join(parts[max_depth - 1 :])])


def map_repository_name(
    repository: str, *, template: str | None = None, mapping: Mapping[str, str] | None = None, max_depth: int = 2
) -> str:
    """Destination path (below the prefix) of an ECR repository: mapping, else template, else default."""
    if mapping and repository in mapping:
        return mapping[repository].strip("/")
    if template is not None:
        parts = repository.split("/")
        namespace = "/".join(parts[:-1])
        values = {
            "repo": repository,
            "repo_flat": repository.replace("/", "-"),
            "name": parts[-1],
            "namespace": namespace,
            "namespace_flat": namespace.replace("/", "-"),
            "first": parts[0],
        }
        return re.sub(r"/+", "/", template.format_map(values)).strip("/")
    return default_destination_name(repository, max_depth)


def _repository_selected(name: str, include: Sequence[re.Pattern[str]], exclude: Sequence[re.Pattern[str]]) -> bool:
    if include and not any(p.fullmatch(name) for p in include):
        return False
    return not any(p.fullmatch(name) for p in exclude)


def shard_repositories(weights: Mapping[str, int], total: int) -> list[list[str]]:
    """Deterministic partition of repositories into ``total`` shards, balanced by weight (bytes).

    Largest first onto the lightest shard (ties: fewer repositories, then lower index), so no shard
    stays empty while another holds two or more repositories.
    """
    shards: list[list[str]] = [[] for _ in range(total)]
    loads = [0] * total
    for name in sorted(weights, key=lambda n: (-weights[n], n)):
        target = min(range(total), key=lambda i: (loads[i], len(shards[i]), i))
        shards[target].append(name)
        loads[target] += weights[name]
    return shards


def select_repositories(names: Iterable[str], options: MigrationOptions) -> list[str]:
    """The repository names ``options.include``/``exclude`` select."""
    include = [_compile(p, "repository filter") for p in options.include]
    exclude = [_compile(p, "repository filter") for p in options.exclude]
    return [name for name in names if _repository_selected(name, include, exclude)]


def build_plan(repositories: Iterable[EcrRepository], options: MigrationOptions) -> Plan:
    """Select, name and validate; raise :class:`ConfigurationError` for collisions or invalid names."""
    include = [_compile(p, "repository filter") for p in options.include]
    exclude = [_compile(p, "repository filter") for p in options.exclude]
    tag_re = _compile(options.tag_pattern, "tag pattern") if options.tag_pattern else None
    summary = PlanSummary(shard=str(options.shard))
    all_repos = sorted(repositories, key=lambda r: r.name)
    summary.repositories_total = len(all_repos)
    selected = [r for r in all_repos if _repository_selected(r.name, include, exclude)]
    summary.repositories_excluded = len(all_repos) - len(selected)

    # names: every selected repository, before sharding, so a collision is caught by every shard
    destinations: dict[str, str] = {}
    by_destination: dict[str, list[str]] = {}
    problems: list[str] = []
    for repo in selected:
        dest = map_repository_name(
            repo.name, template=options.name_template, mapping=options.mapping, max_depth=options.max_depth
        )
        destinations[repo.name] = dest
        by_destination.setdefault(dest, []).append(repo.name)
        if not dest or not is_valid_repository(dest):
            problems.append(f"{repo.name} -> {dest!r} is not a valid repository path")
        elif dest.count("/") + 1 > options.max_depth:
            problems.append(f"{repo.name} -> {dest} is {dest.count('/') + 1} levels deep; at most {options.max_depth}")
    for dest, sources in sorted(by_destination.items()):
        if len(sources) > 1:
            problems.append(f"{', '.join(sources)} all map to {dest}")
    if problems:
        raise ConfigurationError(
            "invalid name mapping: " + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        )

    per_repo: dict[str, list[PlannedImage]] = {}
    skipped: list[SkippedTag] = []
    untagged: dict[str, int] = {}
    kinds: dict[str, UntaggedKinds] = {}
    referrers: dict[str, int] = {}
    filtered: dict[str, int] = {}
    for repo in selected:
        present = {i.digest for i in repo.images}

        def follows_subject(tag: str, present: set[str] = present) -> bool:
            """cosign's tags and fallback indexes of an image of the repository go with that image."""
            named = subject_of_tag(tag) if options.referrers else None
            return named is not None and named[0] in present

        schema_tags = sum(1 for i in repo.images for t in i.tags if follows_subject(t))
        tagged = [i for i in repo.images if any(not follows_subject(t) for t in i.tags)]
        kinds[repo.name] = classify_untagged(repo)
        untagged[repo.name] = sum(1 for i in repo.images if not i.tags)
        referrers[repo.name] = sum(1 for i in repo.images if i.subject_digest) + schema_tags
        dropped = 0
        if options.pushed_since is not None:
            since = options.pushed_since
            kept = [i for i in tagged if i.pushed_at is not None and i.pushed_at >= since]
            dropped += sum(len(i.tags) for i in tagged if i not in kept)
            tagged = kept
        if options.newest is not None:
            ordered = sorted(
                tagged,
                key=lambda i: (i.pushed_at or datetime.min.replace(tzinfo=UTC), i.digest),
                reverse=True,
            )
            dropped += sum(len(i.tags) for i in ordered[options.newest :])
            tagged = ordered[: options.newest]
        planned: list[PlannedImage] = []
        for image in tagged:
            for tag in sorted(image.tags):
                if follows_subject(tag):
                    continue
                if tag_re is not None and not tag_re.fullmatch(tag):
                    dropped += 1
                    continue
                if not is_valid_tag(tag):
                    skipped.append(SkippedTag(repo.name, tag, image.digest, "invalid_tag"))
                    continue
                if image.status != "ACTIVE":  # archived or activating: ECR refuses to serve it until restored
                    skipped.append(SkippedTag(repo.name, tag, image.digest, image.status.lower()))
                    continue
                planned.append(
                    PlannedImage(repo.name, tag, image.digest, destinations[repo.name], image.size, image.pushed_at)
                )
        if options.untagged == "tag":
            for image in kinds[repo.name].standalone:
                if options.pushed_since is not None and (
                    image.pushed_at is None or image.pushed_at < options.pushed_since
                ):
                    continue
                tag = untagged_tag(image.digest)
                if image.status != "ACTIVE":
                    skipped.append(SkippedTag(repo.name, tag, image.digest, image.status.lower()))
                    continue
                planned.append(
                    PlannedImage(
                        repo.name,
                        tag,
                        image.digest,
                        destinations[repo.name],
                        image.size,
                        image.pushed_at,
                        untagged=True,
                    )
                )
        per_repo[repo.name] = sorted(planned, key=lambda p: p.tag)
        filtered[repo.name] = dropped

    weights = {name: _estimated_bytes(images) for name, images in per_repo.items()}
    shards = shard_repositories(weights, options.shard.total)
    mine = set(shards[options.shard.index - 1])
    plan = Plan(
        destinations={n: d for n, d in destinations.items() if n in mine},
        shards=[sorted(shard) for shard in shards],
        fleet_images=per_repo,
        fleet_destinations={n: destinations[n] for n in per_repo},
    )
    for name in sorted(mine):
        plan.images.extend(per_repo[name])
    plan.skipped = [s for s in skipped if s.repository in mine]
    summary.untagged = sum(untagged[n] for n in mine)
    _count_untagged(summary, {n: kinds[n] for n in mine}, options)
    summary.untagged_tagged = sum(1 for p in plan.images if p.untagged)
    summary.referrers = sum(referrers[n] for n in mine)
    summary.tags_filtered = sum(filtered[n] for n in mine)
    summary.repositories = len(mine)
    summary.images = len({(p.repository, p.digest) for p in plan.images})
    summary.tags = len(plan.images)
    summary.tags_invalid = sum(1 for s in plan.skipped if s.reason == "invalid_tag")
    summary.tags_archived = sum(1 for s in plan.skipped if s.reason != "invalid_tag")
    summary.estimated_bytes = sum(weights[n] for n in mine)
    summary.destinations = dict(sorted(plan.destinations.items()))
    plan.summary = summary
    return plan


def _count_untagged(summary: PlanSummary, kinds: Mapping[str, UntaggedKinds], options: MigrationOptions) -> None:
    summary.untagged_standalone = sum(len(k.standalone) for k in kinds.values())
    summary.untagged_index_children = sum(k.index_children for k in kinds.values())
    summary.untagged_referrers = sum(k.referrers for k in kinds.values())
    if options.untagged == "skip":
        summary.untagged_skipped = {n: len(kinds[n].standalone) for n in sorted(kinds) if kinds[n].standalone}


def recount_untagged(
    summary: PlanSummary, repositories: Iterable[EcrRepository], options: MigrationOptions
) -> PlanSummary:
    """``summary`` with its untagged counts taken from ``repositories`` (the plan's own, now with
    what their indexes list). With ``untagged: skip`` nothing else of a plan depends on the
    indexes, so a migration reads them while it copies and recounts here."""
    counted = summary.model_copy(deep=True)
    _count_untagged(counted, {r.name: classify_untagged(r) for r in repositories}, options)
    return counted


def _estimated_bytes(images: Sequence[PlannedImage]) -> int:
    """Bytes to move for a repository: each distinct image once (ECR sizes; an index counts its largest child)."""
    return sum({p.digest: p.size or 0 for p in images}.values())
