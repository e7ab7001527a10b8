"""Properties and examples of :mod:`ecrcopy._reference`: grammar, round trips, Docker Hub defaults."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from ecrcopy._exceptions import ConfigurationError, InvalidReference
from ecrcopy._reference import (
    MAX_NAME_LENGTH,
    REPOSITORY_RE,
    TAG_RE,
    Reference,
    is_loopback_host,
    is_valid_digest,
    is_valid_repository,
    is_valid_tag,
    parse_reference,
    shown_reference,
    split_host_port,
)

# ---------------------------------------------------------------------------------------------- strategies

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_SEPARATORS = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def components(draw: st.DrawFn) -> str:
    """One path component: ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*``."""
    runs = draw(st.lists(st.text(_ALNUM, min_size=1, max_size=8), min_size=1, max_size=4))
    out = runs[0]
    for run in runs[1:]:
        out += draw(_SEPARATORS) + run
    return out


repositories = st.lists(components(), min_size=1, max_size=5).map("/".join)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True)
sha256_digests = st.binary(max_size=64).map(lambda b: "sha256:" + hashlib.sha256(b).hexdigest())
sha512_digests = st.binary(max_size=64).map(lambda b: "sha512:" + hashlib.sha512(b).hexdigest())
digests = st.one_of(sha256_digests, sha512_digests)

_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
domains = (
    st.lists(_label, min_size=2, max_size=4)
    .map(".".join)
    .filter(lambda d: d.lower() not in ("index.docker.io", "registry-1.docker.io"))
)
ports = st.integers(min_value=1, max_value=65535)


@st.composite
def hosts(draw: st.DrawFn) -> str:
    """Registry hosts the parser recognises as hosts: domains, ``localhost``, IPv4 and bracketed IPv6."""
    kind = draw(st.sampled_from(["fixed", "domain", "domain_port", "localhost_port", "ipv4_port", "ipv6_port"]))
    if kind == "fixed":
        return draw(
            st.sampled_from(
                [
                    "localhost",
                    "localhost:5000",
                    "127.0.0.1:5000",
                    "[::1]:5000",
                    "[::1]",
                    "docker.io",
                    "gitlab.com",
                    "registry.gitlab.com",
                    "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                ]
            )
        )
    if kind == "domain":
        return draw(domains)
    port = draw(ports)
    if kind == "domain_port":
        return f"{draw(domains)}:{port}"
    if kind == "localhost_port":
        return f"localhost:{port}"
    if kind == "ipv4_port":
        octets = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
        return f"{'.'.join(map(str, octets))}:{port}"
    return f"[::{draw(st.integers(1, 0xFFFF)):x}]:{port}"


@st.composite
def references(draw: st.DrawFn) -> Reference:
    host = draw(hosts())
    repo = draw(repositories)
    assume(len(host) + 1 + len(repo) <= MAX_NAME_LENGTH)
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    return Reference(host, repo, tag, digest)


# ---------------------------------------------------------------------------------------------- properties


@given(references())
def test_round_trip(ref: Reference) -> None:
    text = str(ref)
    assert parse_reference(text) == ref
    assert str(parse_reference(text)) == text


@given(references())
def test_derived_references_round_trip(ref: Reference) -> None:
    assert parse_reference(str(ref.repository_ref())) == Reference(ref.registry, ref.repository)
    assert ref.with_tag("v1").tag == "v1" and ref.with_tag("v1").digest is None
    assert parse_reference(str(ref.with_tag("latest"))) == ref.with_tag("latest")
    digest = "sha256:" + "ab" * 32
    assert ref.with_digest(digest).reference == digest
    assert ref.reference == (ref.digest or ref.tag)
    assert ref.is_repository == (ref.tag is None and ref.digest is None)
    assert ref.name == f"{ref.registry}/{ref.repository}"


@given(repositories, tags)
def test_grammar_strategies_match_the_spec_regexes(repo: str, tag: str) -> None:
    assert REPOSITORY_RE.fullmatch(repo) and is_valid_repository(repo)
    assert TAG_RE.fullmatch(tag) and is_valid_tag(tag)


@given(st.text())
@example("")
@example("@")
@example(":")
@example("[")
@example("[::1")
@example("[]:/x")
@example("a:99999999999999999999/b")
@example("host:abc/x")
@example("https://host/x")
@example("localhost:5000")
@example("a/b@sha256:" + "0" * 64 + "@x")
def test_parse_never_raises_anything_but_invalid_reference(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert str(exc)
        assert isinstance(exc, ConfigurationError)  # fatal configuration error
        return
    # whatever parses is valid and stable under formatting
    assert is_valid_repository(ref.repository)
    assert parse_reference(str(ref)) == ref


@given(
    st.text(st.characters(blacklist_characters="@"), min_size=1, max_size=20),
    st.text(max_size=40),
    st.sampled_from(["", "@sha256:" + "0" * 64, ":v1", "@sha256:short"]),
)
@example("user:pw", "host/repo", "")
@example("user:pw", "https://host/repo", "")
@example("a@b:pw", "host/repo", "@sha256:" + "0" * 64)
def test_user_info_never_appears_in_the_error(secret: str, rest: str, end: str) -> None:
    """Whatever precedes an ``@`` that is not a digest's is taken for credentials and never echoed."""
    secret = "S3cr3t" + secret
    text = f"{secret}@{rest}{end}"
    try:
        parse_reference(text)
    except InvalidReference as exc:
        assert "S3cr3t" not in str(exc)
    else:  # pragma: no cover - such a text is never a valid reference ("@" before a non-digest)
        raise AssertionError(text)
    assert "S3cr3t" not in shown_reference(text)


def test_shown_reference_keeps_valid_references_whole() -> None:
    digest = "sha256:" + "0" * 64
    for text in ("host/repo", f"alpine@{digest}", f"host:5000/a/b:v1@{digest}", "a:b"):
        assert shown_reference(text) == text
    assert shown_reference(f"u:p@host/repo@{digest}") == f"***@host/repo@{digest}"


@given(st.text(st.characters(blacklist_characters="/@:"), max_size=140).filter(lambda t: not TAG_RE.fullmatch(t)))
@example("")
@example(".hidden")
@example("-dash")
@example("a" * 129)
@example("with space")
@example("st*r")
@example("ünïcode")
def test_invalid_tag_is_rejected_naming_the_tag(tag: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(f"registry.example.com/team/app:{tag}")
    assert "tag" in str(info.value) and repr(tag) in str(info.value)
    with pytest.raises(InvalidReference, match="invalid tag"):
        Reference("registry.example.com", "team/app", tag=tag)


@given(st.text(st.characters(blacklist_characters=":@"), min_size=1, max_size=60))
@example("Team/App")
@example("team//app")
@example("team/app/")
@example("/team")
@example("team/-app")
@example("team/app.")
@example("a...b")
@example("a___b")
def test_invalid_repository_is_rejected_naming_the_repository(name: str) -> None:
    assume(not REPOSITORY_RE.fullmatch(name))
    with pytest.raises(InvalidReference) as info:
        parse_reference(f"registry.example.com/{name}:v1")
    assert "repository" in str(info.value)
    with pytest.raises(InvalidReference) as info:
        Reference("registry.example.com", name)
    assert "invalid repository name" in str(info.value) and repr(name) in str(info.value)


# a second "@" makes what precedes it possible user info, never echoed: test_user_info_never_appears_in_the_error
@given(st.text(max_size=140).filter(lambda d: not is_valid_digest(d) and "@" not in d))
@example("sha256:" + "a" * 63)
@example("sha256:" + "a" * 65)
@example("sha256:" + "A" * 64)
@example("md5:" + "a" * 32)
@example("sha256:")
@example("://")
@example("sha512:" + "a" * 64)
def test_invalid_digest_is_rejected_naming_the_digest(digest: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(f"registry.example.com/team/app@{digest}")
    assert "digest" in str(info.value) and repr(digest) in str(info.value)
    with pytest.raises(InvalidReference, match="invalid digest"):
        Reference("registry.example.com", "team/app", digest=digest)


@given(digests)
def test_valid_digests_accepted(digest: str) -> None:
    assert is_valid_digest(digest)
    ref = parse_reference(f"localhost:5000/a@{digest}")
    assert ref.digest == digest and ref.reference == digest and ref.tag is None


@given(st.text())
@example("foo:bar")
@example("[::1]:x")
@example("[]:")
@example("[")
@example("localhost:")
def test_is_loopback_host_never_raises(host: str) -> None:
    assert isinstance(is_loopback_host(host), bool)


@given(components(), st.none() | tags)
def test_docker_hub_short_names_get_library_prefix(name: str, tag: str | None) -> None:
    assume("." not in name and name != "localhost")
    text = name if tag is None else f"{name}:{tag}"
    ref = parse_reference(text)
    assert ref == Reference("docker.io", f"library/{name}", tag)
    assert ref.api_host == "registry-1.docker.io"


# ---------------------------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu", Reference("docker.io", "library/ubuntu")),
        ("ubuntu:22.04", Reference("docker.io", "library/ubuntu", "22.04")),
        ("bitnami/redis:7", Reference("docker.io", "bitnami/redis", "7")),
        ("docker.io/ubuntu", Reference("docker.io", "ubuntu")),
        ("index.docker.io/library/ubuntu", Reference("docker.io", "library/ubuntu")),
        ("registry-1.docker.io/library/ubuntu:x", Reference("docker.io", "library/ubuntu", "x")),
        ("localhost/app", Reference("localhost", "app")),
        ("localhost:5000/app:v1", Reference("localhost:5000", "app", "v1")),
        ("127.0.0.1:5000/a/b", Reference("127.0.0.1:5000", "a/b")),
        ("[::1]:5000/a/b:t", Reference("[::1]:5000", "a/b", "t")),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1.2.3",
            Reference("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "team/app", "1.2.3"),
        ),
        (
            "registry.gitlab.com/group/project/img@sha256:" + "e" * 64,
            Reference("registry.gitlab.com", "group/project/img", digest="sha256:" + "e" * 64),
        ),
        (
            "gitlab.com:5050/g/p:v@sha256:" + "1" * 64,
            Reference("gitlab.com:5050", "g/p", "v", "sha256:" + "1" * 64),
        ),
        ("localhost:5000", Reference("docker.io", "library/localhost", "5000")),  # Docker's rule, too
        ("a--b.c/x", Reference("a--b.c", "x")),  # a dot in the first component makes it a host
    ],
)
def test_parse_examples(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_docker_hub_api_host_and_other_hosts() -> None:
    assert parse_reference("ubuntu").api_host == "registry-1.docker.io"
    assert parse_reference("ubuntu").name == "docker.io/library/ubuntu"
    assert parse_reference("ghcr.io/a/b").api_host == "ghcr.io"


@pytest.mark.parametrize(
    "text",
    [
        "https://registry.example.com/team/app",
        "registry.example.com/",
        "registry.example.com/Team/App",
        "registry.example.com:99999/app",
        "registry.example.com:0/app",
        "bad_host!.com/app",
        "a__b.c/x",  # looks like a host (has a dot), and underscores are not allowed in hosts
        "[zz]:5000/app",
        "",
        "registry.example.com/app:",
        "registry.example.com/app@",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(text)


def test_length_cap_is_255_for_host_and_path() -> None:
    host = "r.io"
    fits = "a" * (MAX_NAME_LENGTH - len(host) - 1)
    ref = parse_reference(f"{host}/{fits}:v1")
    assert len(ref.name) == MAX_NAME_LENGTH
    with pytest.raises(InvalidReference, match="longer than 255"):
        parse_reference(f"{host}/{fits}a:v1")
    with pytest.raises(InvalidReference, match="longer than 255"):
        Reference(host, fits + "a")
    # tag and digest do not count towards the cap
    long_tag = "t" * 128
    assert parse_reference(f"{host}/{fits}:{long_tag}@sha256:{'0' * 64}").tag == long_tag


def test_child_repository() -> None:
    base = parse_reference("registry.gitlab.com/group/project")
    assert base.child("ecr/app") == Reference("registry.gitlab.com", "group/project/ecr/app")
    assert base.child("/x/") == Reference("registry.gitlab.com", "group/project/x")
    with pytest.raises(InvalidReference):
        base.child("Upper")


def test_reference_is_frozen_and_hashable() -> None:
    ref = parse_reference("localhost:5000/a:v1")
    assert {ref, parse_reference("localhost:5000/a:v1")} == {ref}
    with pytest.raises(AttributeError):
        ref.tag = "v2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST:5000", True),
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:5000", True),
        ("127.8.9.10:1", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("[::2]:5000", False),
        ("localhost.example.com", False),
        ("registry.example.com:5000", False),
        ("128.0.0.1", False),
        ("foo:bar", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("host", "split"),
    [
        ("h.io", ("h.io", None)),
        ("h.io:5000", ("h.io", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_split_host_port(host: str, split: tuple[str, int | None]) -> None:
    assert split_host_port(host) == split
