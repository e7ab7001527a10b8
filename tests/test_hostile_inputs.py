"""Hostile input at ecrcopy's parse and I/O boundaries: only ``EcrcopyError``, and clean messages.

Properties (hypothesis) over manifests, the pure protocol helpers, a :class:`RegistryClient` talking to
an ``httpx.MockTransport`` that answers with generated statuses, headers and bodies (the token flow
included), and the blob location cache. Whatever arrives, the library either succeeds with validated
values or raises an :class:`~ecrcopy.EcrcopyError` whose message is one printable line: never a bare
``ValueError``, ``KeyError``, ``TypeError``, ``RecursionError``, httpx or pydantic exception.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from ecrcopy import _mediatypes as mt
from ecrcopy._cache import BlobHints
from ecrcopy._client import ManifestInfo, RegistryClient
from ecrcopy._credentials import Credentials, StaticCredentials
from ecrcopy._exceptions import EcrcopyError
from ecrcopy._models import MAX_MANIFEST_SIZE, Descriptor, Manifest
from ecrcopy._options import CopyOptions
from ecrcopy._protocol import (
    MAX_TOKEN_LIFETIME,
    Challenge,
    OciError,
    clean_text,
    jwt_claims,
    jwt_expiry,
    next_link,
    parse_error_body,
    parse_range_end,
    parse_retry_after,
    parse_token_response,
    parse_www_authenticate,
    redact_url,
    same_origin,
)
from ecrcopy._reference import REPOSITORY_RE

HOST = "registry.example.com"
AUTH_HOST = "auth.example.com"
S3_HOST = "bucket.s3.example.com"
REALM = f"https://{AUTH_HOST}/token"
REPO = "team/app"
USER, PASSWORD = "robot", "hostile-Secret-3c1f"
FAST = CopyOptions(retries=1, retry_backoff=0, retry_backoff_max=0)
#: requests one client call may send before the mock calls it a loop
MAX_REQUESTS = 60

VALID_DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
#: what a message must not hold: C0 controls (ESC included), DEL and C1 controls
MESSAGE_BAD_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
#: what clean_text must remove (its docstring): also surrogates and the XML-invalid non-characters
CLEAN_BAD_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
#: no "explain" phase: it re-runs failing cases many times and adds nothing to a minimal example here
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
PROBE_SETTINGS = settings(max_examples=300, deadline=None, phases=PHASES)
FIXTURE_SETTINGS = settings(deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.function_scoped_fixture])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def assert_clean_message(exc: BaseException) -> None:
    """The message of an error is one printable line: no control character, no terminal escape."""
    text = str(exc)
    bad = MESSAGE_BAD_RE.search(text)
    assert bad is None, f"{type(exc).__name__} message holds {bad.group()!r}: {text!r}"
    assert len(text.splitlines()) <= 1, f"{type(exc).__name__} message spans lines: {text!r}"


# ============================================================================================== strategies

_NASTY = [
    "\x1b[31m",
    "\x1b[2J",
    "\x1b]0;pwned\x07",
    "\x1b]8;;http://evil.example/\x1b\\",
    "\x1bP1$r\x1b\\",
    "\x9b31m",
    "\x1b",
    "\r\n",
    "\n",
    "\r",
    "\t",
    "\x00",
    "\x07",
    "\x08",
    "\x7f",
    "\x85",
    "\x9f",
    "\u2028",
    "\u2029",
    "\ud800",
    "\udfff",
    "\ufffe",
    "\uffff",
    "\u202e",
    "\u200b",
    "²",
    "①",
    "٣",
    "\uff11",
    "é",
    "💥",
    '"',
    "\\",
    "'",
    "%00",
    "%0d%0a",
    "../",
    "{",
    "}",
    "[",
    "]",
    ",",
    ";",
    "=",
    " ",
]

#: text a hostile registry may send: plain unicode, and pieces that break terminals, logs and parsers
hostile_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.text(max_size=6), st.sampled_from(_NASTY)), max_size=8).map("".join),
)
short_text = st.one_of(st.text(max_size=8), st.sampled_from(_NASTY))

HEX = "0123456789abcdef"


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=n, max_size=n)


def _algorithm_and_hex(algorithm: str, hex_part: str) -> str:
    return f"{algorithm}:{hex_part}"


def _content_range(start: str, end: str) -> str:
    return f"bytes {start}-{end}/*"


valid_digests = st.one_of(hexes(64).map("sha256:".__add__), hexes(128).map("sha512:".__add__))
bad_digests = st.one_of(
    hexes(64).map(lambda h: "sha256:" + h.upper()),
    hexes(128).map(lambda h: "SHA512:" + h),
    st.integers(0, 140).flatmap(hexes).map("sha256:".__add__),
    st.integers(0, 140).flatmap(hexes).map("sha512:".__add__),
    hexes(32).map("md5:".__add__),
    hexes(96).map("sha384:".__add__),
    hexes(64).map("blake3:".__add__),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256+b64:" + b64url(b)),
    hexes(64).map(lambda h: f"sha256:{h}\n"),
    hexes(64).map(lambda h: f"\x1b[31msha256:{h}"),
    hexes(63).map(lambda h: f"sha256:{h}\x00"),
    hexes(62).map(lambda h: f"sha256:{h}\x1b["),
    hexes(64).map(lambda h: f" sha256:{h} "),
    hexes(64).map(lambda h: f"sha256:{h}/../../x"),
    st.sampled_from(
        ["", ":", "sha256:", "sha256", "../../x", "sha256:../../etc/passwd", "sha256:" + "\u0660" * 64, "%2e%2e/"]
    ),
    st.builds(_algorithm_and_hex, hostile_text, hostile_text),
    hostile_text,
)
digest_strings = st.one_of(valid_digests, bad_digests)

huge_numbers = st.sampled_from([10**400, -(10**400), 2**64, -(2**63), 2**40, 2**40 + 1, 10**30, 1e308, -1e308])
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_numbers,
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(short_text, children, max_size=4),
    max_leaves=12,
)

size_values = st.one_of(
    st.integers(0, 2**40),
    st.integers(-(2**70), 2**70),
    huge_numbers,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-1, 0, 1, 2**40, 2**40 + 1, 1.0, 1.5, -0.0, "1", "1e3", "0x10", " 7 ", "", True, False, None]),
    hostile_text,
    json_values,
)
descriptor_media_types = st.one_of(
    st.sampled_from(
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.config.v1+json",
            mt.DOCKER_FOREIGN_LAYER,
            *sorted(mt.MANIFEST_TYPES),
            "x" * 256,
        ]
    ),
    hostile_text,
    json_scalars,
)
manifest_media_types = st.one_of(st.sampled_from(sorted(mt.MANIFEST_TYPES)), hostile_text, json_scalars)
annotations = st.one_of(st.dictionaries(hostile_text, hostile_text | json_values, max_size=3), json_values)
platforms = st.one_of(
    st.fixed_dictionaries(
        {"architecture": hostile_text | json_scalars, "os": hostile_text | json_scalars},
        optional={"variant": hostile_text | json_scalars, "os.version": json_values, "os.features": json_values},
    ),
    json_values,
)

_DESCRIPTOR_OPTIONAL = {
    "urls": st.lists(hostile_text, max_size=2) | json_values,
    "annotations": annotations,
    "platform": platforms,
    "artifactType": hostile_text | json_scalars,
    "data": hostile_text | json_scalars,
}
descriptors = st.one_of(
    st.fixed_dictionaries(
        {"mediaType": descriptor_media_types, "digest": digest_strings, "size": size_values},
        optional=_DESCRIPTOR_OPTIONAL,
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "mediaType": descriptor_media_types,
            "digest": digest_strings | json_values,
            "size": size_values,
            **_DESCRIPTOR_OPTIONAL,
        },
    ),
    json_values,
)
schema_versions = st.one_of(st.sampled_from([2, 1, 0, -1, "2", 2.0, 2.5, True, None, 10**30, 10**400]), json_scalars)
image_manifests = st.fixed_dictionaries(
    {"schemaVersion": schema_versions, "config": descriptors},
    optional={
        "mediaType": manifest_media_types,
        "layers": st.lists(descriptors, max_size=4) | json_values,
        "subject": descriptors,
        "annotations": annotations,
        "artifactType": hostile_text | json_scalars,
        "signatures": json_values,
        "fsLayers": json_values,
        "manifests": json_values,
    },
)
image_indexes = st.fixed_dictionaries(
    {"schemaVersion": schema_versions, "manifests": st.lists(descriptors, max_size=4) | json_values},
    optional={
        "mediaType": manifest_media_types,
        "subject": descriptors,
        "annotations": annotations,
        "artifactType": hostile_text | json_scalars,
        "config": descriptors,
        "layers": json_values,
    },
)

good_descriptors = st.fixed_dictionaries(
    {
        "mediaType": st.sampled_from(
            ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.config.v1+json", mt.OCI_MANIFEST]
        ),
        "digest": valid_digests,
        "size": st.integers(0, 2**40),
    },
    optional={
        "annotations": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        "platform": st.just({"architecture": "amd64", "os": "linux"}),
        "urls": st.just(["https://example.com/layer"]),
    },
)
#: where in a descriptor a hostile value goes, and what it may be
_DESCRIPTOR_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "digest": digest_strings | json_scalars,
    "size": size_values,
    "mediaType": descriptor_media_types,
    "annotations": annotations,
    "platform": platforms,
    "urls": _DESCRIPTOR_OPTIONAL["urls"],
    "artifactType": hostile_text | json_scalars,
    "data": hostile_text | json_scalars,
}


@st.composite
def mutated_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid image manifest or index with one hostile value in one descriptor (or at the top)."""
    index = draw(st.booleans())
    body: dict[str, Any] = {"schemaVersion": 2}
    if draw(st.booleans()):
        body["mediaType"] = draw(
            st.sampled_from(sorted(mt.INDEX_TYPES if index else mt.IMAGE_MANIFEST_TYPES)) | manifest_media_types
        )
    if index:
        body["manifests"] = draw(st.lists(good_descriptors, min_size=1, max_size=3))
        targets = [body["manifests"][i] for i in range(len(body["manifests"]))]
    else:
        body["config"] = draw(good_descriptors)
        body["layers"] = draw(st.lists(good_descriptors, max_size=3))
        targets = [body["config"], *body["layers"]]
    if draw(st.booleans()):
        body["subject"] = draw(good_descriptors)
        targets.append(body["subject"])
    where = draw(st.sampled_from(["descriptor", "descriptor", "descriptor", "top"]))
    if where == "top":
        key = draw(st.sampled_from(["schemaVersion", "annotations", "artifactType", "mediaType", "subject"]))
        body[key] = draw({"schemaVersion": schema_versions, "annotations": annotations}.get(key, json_values))
    else:
        target = draw(st.sampled_from(targets))
        key = draw(st.sampled_from(sorted(_DESCRIPTOR_FIELDS)))
        if draw(st.integers(0, 9)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(_DESCRIPTOR_FIELDS[key])
    return body


@st.composite
def json_bytes(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """``values`` serialised as a registry might: any spacing, NaN, raw non-ASCII, lone surrogates, UTF-16/32."""
    value = draw(values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True, indent=draw(st.sampled_from([None, 1])))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32"]))
    return text.encode(encoding, "surrogatepass")


_Z64 = "0" * 64
#: documents with a hole (``@@``) for deeply nested JSON
_DEEP_WRAPS = [
    "@@",
    f'{{"schemaVersion":2,"mediaType":"{mt.OCI_MANIFEST}","config":@@}}',
    f'{{"schemaVersion":2,"mediaType":"{mt.OCI_MANIFEST}","config":{{"mediaType":"a","digest":"sha256:{_Z64}",'
    '"size":1,"annotations":{"a":@@}}}',
    f'{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"sha256:{_Z64}","size":1}},"layers":@@}}',
    f'{{"schemaVersion":2,"mediaType":"{mt.OCI_INDEX}","manifests":@@}}',
    f'{{"schemaVersion":2,"manifests":[{{"mediaType":"a","digest":"sha256:{_Z64}","size":1,"platform":@@}}]}}',
    '{"errors":@@}',
    '{"token":"t","expires_in":@@}',
    '{"version":1,"hosts":@@}',
]


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """JSON nested deeper than parsers like, alone or inside a manifest field."""
    depth = draw(st.sampled_from([50, 128, 199, 200, 201, 255, 256, 257, 500, 999, 1000, 1001, 3000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")]))
    leaf = draw(st.sampled_from(["1", '"x"', "null", "[]", "{}"]))
    inner = opener * depth + leaf + closer * depth
    wrap = draw(st.sampled_from(_DEEP_WRAPS))
    return wrap.replace("@@", inner).encode()


special_raw = st.sampled_from(
    [
        b"",
        b"null",
        b"NaN",
        b"[]",
        b"{}",
        b'"x"',
        b"1" * 5000,
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":1e999}}',
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:'
        + b"0" * 64
        + b'","size":'
        + b"9" * 5000
        + b"}}",
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":NaN}}',
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":-Infinity}}',
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"\\ud800","size":1}}',
        b'{"schemaVersion":2,"mediaType":"' + mt.OCI_INDEX.encode() + b'","manifests":[{"mediaType":"a","digest":'
        b'"sha256:' + b"a" * 64 + b'","size":1,"annotations":{"\\u001b[31m\\n":1}}]}',
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":1},'
        b'"annotations":{"\\u001b]0;x\\u0007":1}}',
        b'{"schemaVersion":2,"schemaVersion":1,"config":{}}',
        b'{"mediaType":"' + mt.OCI_MANIFEST.encode() + b'","mediaType":"' + mt.OCI_INDEX.encode() + b'"}',
        b'\xef\xbb\xbf{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":1}}',
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":1}}\x00',
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":1}} trailing',
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:' + b"0" * 64 + b'","size":1}',
        b"\xff\xfe\x00\x00",
        b"\x80\x81\x82",
    ]
)
manifest_raw = st.one_of(
    json_bytes(mutated_manifests()),
    json_bytes(mutated_manifests()),
    st.binary(max_size=300),
    json_bytes(json_values),
    json_bytes(image_manifests),
    json_bytes(image_indexes),
    deep_json(),
    special_raw,
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(sorted(mt.MANIFEST_TYPES)),
    st.sampled_from(sorted(mt.MANIFEST_TYPES)).map(lambda t: t + "; charset=utf-8"),
    st.sampled_from(["", ";", "application/json", "text/html", "application/octet-stream"]),
    hostile_text,
)


# ============================================================================================== 1. manifests


def exercise_manifest(manifest: Manifest) -> None:
    """Parse ``manifest`` as the copier would; every descriptor that survives is one ecrcopy can use."""
    assert manifest.media_type in mt.MANIFEST_TYPES
    assert manifest.digest == sha256(manifest.raw)
    try:
        parsed = manifest.parsed
        found: list[Descriptor] = list(manifest.index.manifests if manifest.is_index else manifest.image.blobs)
    except EcrcopyError as exc:
        assert_clean_message(exc)
        return
    if parsed.subject is not None:
        found.append(parsed.subject)
    for descriptor in found:
        assert isinstance(descriptor.digest, str) and VALID_DIGEST_RE.fullmatch(descriptor.digest), descriptor.digest
        assert type(descriptor.size) is int and 0 <= descriptor.size <= 2**40, descriptor.size


@st.composite
def manifest_cases(draw: st.DrawFn) -> tuple[bytes, str | None, str | None]:
    """Raw bytes, a Content-Type and an expected digest as the client would pass it (None or a valid one)."""
    raw = draw(manifest_raw)
    expected = draw(
        st.sampled_from(["none", "sha256", "sha512", "other"]).flatmap(
            lambda how: {
                "none": st.none(),
                "sha256": st.just(sha256(raw)),
                "sha512": st.just(sha512(raw)),
                "other": valid_digests,
            }[how]
        )
    )
    return raw, draw(content_types), expected


@settings(PROBE_SETTINGS, max_examples=1000)
@given(manifest_cases())
def test_manifest_from_hostile_bytes_raises_only_ecrcopy_errors(case: tuple[bytes, str | None, str | None]) -> None:
    raw, content_type, expected = case
    try:
        manifest = Manifest.from_bytes(raw, content_type, expected_digest=expected)
    except EcrcopyError as exc:
        assert_clean_message(exc)
        return
    if expected is not None:
        assert manifest.raw == raw
    exercise_manifest(manifest)


@settings(PROBE_SETTINGS, max_examples=300)
@given(raw=manifest_raw, content_type=content_types, expected=bad_digests | valid_digests)
def test_manifest_with_hostile_expected_digest_raises_only_ecrcopy_errors(
    raw: bytes, content_type: str | None, expected: str
) -> None:
    """``expected_digest`` itself hostile: an unknown algorithm or a mismatch is a DigestMismatch, cleanly worded."""
    try:
        manifest = Manifest.from_bytes(raw, content_type, expected_digest=expected)
    except EcrcopyError as exc:
        assert_clean_message(exc)
        return
    assert expected in (sha256(raw), sha512(raw))
    exercise_manifest(manifest)


def test_manifest_over_the_size_limit_is_unsupported() -> None:
    raw = b'{"schemaVersion":2,"config":' + b" " * MAX_MANIFEST_SIZE + b"}"
    with pytest.raises(EcrcopyError) as info:
        Manifest.from_bytes(raw, mt.OCI_MANIFEST)
    assert_clean_message(info.value)


# ============================================================================================== 2. protocol helpers

_challenge_schemes = st.sampled_from(["Bearer", "bearer", "BASIC", "Basic", "Negotiate", "Digest", "", "Bearer,"])
_param_names = st.sampled_from(["realm", "service", "scope", "error", "REALM", "token68", "", "=", "a b"])


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


realm_values = st.one_of(
    st.sampled_from(
        [
            REALM,
            f"https://{HOST}/token",
            f"https://{AUTH_HOST}/token?service=x&scope=y",
            f"https://{AUTH_HOST}:443/token",
            f"http://{AUTH_HOST}/token",
            "http://127.0.0.1/token",
            "http://[::1]:8080/token",
            "",
            "/token",
            "token",
            "ftp://auth.example.com/token",
            "file:///etc/passwd",
            "https:///token",
            "https://[::1/token",
            "https://auth.example.com:99999/token",
            "https://auth.example.com:-1/token",
            "https://user:pass@auth.example.com/token",
            "https://auth.example.com/to\x1b[31mken",
            "https://auth.example.com/token\r\nX-Injected: 1",
            "https://\u00e9x\u00e4mple.com/token",
            "https://xn--/token",
            "javascript:alert(1)",
        ]
    ),
    hostile_text,
)


@st.composite
def challenge_headers(draw: st.DrawFn, scheme: str | None = None) -> str:
    """A ``WWW-Authenticate`` value: mostly well formed Bearer/Basic challenges with hostile values."""
    if draw(st.integers(0, 9)) == 0:
        return draw(hostile_text)
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 2))):
        name = scheme or draw(_challenge_schemes)
        params = []
        if draw(st.booleans()):
            params.append(("realm", draw(realm_values)))
        for key, values in (
            ("service", hostile_text | st.just(HOST)),
            ("scope", hostile_text),
            ("error", hostile_text),
        ):
            if draw(st.booleans()):
                params.append((key, draw(values)))
        for _ in range(draw(st.integers(0, 2))):
            params.append((draw(_param_names), draw(hostile_text)))
        quote = draw(st.sampled_from(["always", "never", "mixed"]))
        written = [
            f"{k}={_quoted(v) if quote == 'always' or (quote == 'mixed' and draw(st.booleans())) else v}"
            for k, v in params
        ]
        sep = draw(st.sampled_from([",", ", ", " ,", ",,", " "]))
        parts.append(f"{name} {sep.join(written)}".rstrip())
    return draw(st.sampled_from([", ", ",", " "])).join(parts)


www_authenticate_values = st.one_of(challenge_headers(), hostile_text, st.text(alphabet=',="\\ \t=;aB', max_size=30))


@PROBE_SETTINGS
@given(www_authenticate_values)
@example('Bearer realm="unterminated')
@example("Basic ===,=,")
@example('"')
def test_parse_www_authenticate_never_raises(header: str) -> None:
    result = parse_www_authenticate(header)
    assert isinstance(result, list)
    for challenge in result:
        assert isinstance(challenge, Challenge)
        assert isinstance(challenge.scheme, str) and challenge.scheme and challenge.scheme == challenge.scheme.lower()
        for key, value in challenge.params.items():
            assert isinstance(key, str) and key == key.lower() and isinstance(value, str)


def _url(scheme: str, slashes: str, host: str, port: str, path: str) -> str:
    return f"{scheme}{slashes}{host}{port}{path}"


#: URLs assembled from parts that each break some parser: odd schemes, hosts, ports and paths
assembled_urls = st.builds(
    _url,
    st.sampled_from(["https:", "http:", "HTTPS:", "javascript:", "data:", "ftp:", "file:", "", "h\u00e9:", "1http:"]),
    st.sampled_from(["//", "", "/", "///"]),
    st.sampled_from(
        [
            HOST,
            S3_HOST,
            "[::1",
            "[::1]",
            "[v1.x]",
            "",
            "h",
            "user:pw@" + HOST,
            "\u00e9x.com",
            "a..b",
            "%41",
            "xn--",
            "xn--a.b",
        ]
    ),
    st.sampled_from(["", ":443", ":99999", ":-1", ":0", ":65536", ":x", ":", ":" + "9" * 30, ":\u00b2"]),
    st.sampled_from(["/", "", f"/v2/{REPO}/blobs/uploads/u3", "?q=1", "#f", " /x", "/\x1b[31m", "/%zz", "\\x"]),
)
url_values = st.one_of(
    assembled_urls,
    st.sampled_from(
        [
            f"/v2/{REPO}/tags/list?n=2&last=a",
            f"/v2/{REPO}/tags/list?n=2&last=b",
            f"https://{HOST}/v2/{REPO}/tags/list?last=c",
            f"https://{HOST}:443/v2/{REPO}/tags/list?last=d",
            f"http://{HOST}/v2/{REPO}/tags/list?last=e",
            f"https://{S3_HOST}/blob?X-Amz-Signature=s",
            f"https://{HOST}/v2/{REPO}/blobs/uploads/u1?_state=s",
            f"/v2/{REPO}/blobs/uploads/u2",
            "http://evil.example/",
            "//evil.example/x",
            "",
            "?last=z",
            "#frag",
            "https://[::1",
            "http://[",
            "https://[::1]:5000/x",
            "https://h:99999/",
            "https://h:-1/",
            "https://h:port/",
            "https:///path",
            "https:",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "data:text/plain,hi",
            f"https://user:pass@{HOST}/v2/",
            "\x1b[31m/v2/x",
            "/v2/x\x00y",
            "/v2/x y",
            "/v2/%zz",
            "https://\u00e9x\u00e4mple.com/",
            "https://xn--/",
            "https://a..b/",
            "http://" + "a" * 300 + "/",
            "/" + "a" * 5000,
        ]
    ),
    hostile_text,
)


@st.composite
def link_headers(draw: st.DrawFn) -> str:
    links = []
    for _ in range(draw(st.integers(1, 3))):
        url = draw(url_values)
        rel = draw(st.sampled_from(['rel="next"', "rel=next", 'rel="prev next"', 'rel="prev"', "rel=", ""]))
        links.append(f"<{url}>; {rel}" if rel else f"<{url}>")
    return ", ".join(links)


link_values = st.one_of(link_headers(), hostile_text, st.text(alphabet='<>;,="rel next', max_size=40))
base_urls = st.sampled_from(
    [f"https://{HOST}/v2/{REPO}/tags/list?n=100", f"http://127.0.0.1:5000/v2/{REPO}/tags/list", f"https://{HOST}"]
)


@PROBE_SETTINGS
@given(link_values, base_urls)
@example('<https://h:99999/>; rel="next"', f"https://{HOST}/v2/{REPO}/tags/list")
def test_next_link_never_raises(header: str, base_url: str) -> None:
    result = next_link(header, base_url)
    assert result is None or isinstance(result, str)


@PROBE_SETTINGS
@given(url_values, url_values)
def test_same_origin_and_redact_url_never_raise(a: str, b: str) -> None:
    """Helpers the client applies to every Location and Link a registry sends."""
    assert isinstance(same_origin(a, b), bool)
    assert isinstance(redact_url(a), str)


@st.composite
def error_bodies(draw: st.DrawFn) -> bytes:
    codes = st.sampled_from(["MANIFEST_UNKNOWN", "DIGEST_INVALID", "DENIED", "", "lower", "A" * 70]) | json_values
    item = st.fixed_dictionaries(
        {}, optional={"code": codes, "message": hostile_text | json_values, "detail": json_values}
    )
    shape = draw(st.sampled_from(["errors", "error", "message", "raw", "text", "deep"]))
    if shape == "errors":
        return draw(
            json_bytes(st.fixed_dictionaries({"errors": st.lists(item | json_values, max_size=5) | json_values}))
        )
    if shape == "error":
        return draw(json_bytes(st.fixed_dictionaries({"error": hostile_text | json_values}, optional={"code": codes})))
    if shape == "message":
        return draw(
            json_bytes(st.fixed_dictionaries({"message": hostile_text | json_values}, optional={"code": codes}))
        )
    if shape == "text":
        return draw(hostile_text).encode("utf-8", "surrogatepass")
    if shape == "deep":
        return draw(deep_json())
    return draw(st.binary(max_size=200))


@PROBE_SETTINGS
@given(error_bodies(), st.integers(0, 5))
@example(b'{"errors":[{"code":"X","message":"\\u001b[31mred\\u001b[0m\\r\\nnext"}]}', 3)
@example(b'{"message":' + b"[" * 5000 + b"]" * 5000 + b"}", 3)
def test_parse_error_body_never_raises(body: bytes, limit: int) -> None:
    errors = parse_error_body(body, limit)
    assert isinstance(errors, list) and len(errors) <= max(limit, 1)
    for error in errors:
        assert isinstance(error, OciError)
        assert re.fullmatch(r"(?:[A-Z][A-Z0-9_]{0,63})?", error.code), error.code
        assert isinstance(error.message, str) and len(error.message) <= 300
        assert CLEAN_BAD_RE.search(error.message) is None, error.message
        assert len(error.message.splitlines()) <= 1


retry_after_values = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "3600",
            "3601",
            "99999999999999999999",
            "1.5",
            "1e9",
            "NaN",
            "inf",
            "-inf",
            " 5 ",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 07:28:00 -0000",
            "Mon, 01 Jan 0001 00:00:00 +2359",
            "Fri, 31 Dec 9999 23:59:59 -2359",
            "Fri, 31 Dec 99999 23:59:59 GMT",
            "Sun, 06 Nov 1994 08:49:37",
            "32 Dec 2020 00:00:00 GMT",
            "31 Feb 2020 00:00:00 GMT",
            "1 Jan 70 25:61:61 GMT",
            "Jan 1 00:00:00 2020 +9999",
            "",
        ]
    ),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    hostile_text,
)


@PROBE_SETTINGS
@given(retry_after_values, st.none() | st.floats(0, 4e9))
def test_parse_retry_after_never_raises(value: str, now: float | None) -> None:
    result = parse_retry_after(value, now)
    assert result is None or (isinstance(result, float) and math.isfinite(result) and 0.0 <= result <= 3600.0)


claim_numbers = st.one_of(
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 4e9),
    huge_numbers,
    st.booleans(),
    hostile_text,
    st.none(),
)


@st.composite
def jwts(draw: st.DrawFn) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims_value = draw(
        st.fixed_dictionaries({}, optional={"exp": claim_numbers, "iat": claim_numbers, "nbf": claim_numbers})
        | json_values
    )
    how = draw(st.sampled_from(["json", "json", "binary", "text", "padded", "deep"]))
    if how == "json":
        claims = b64url(draw(json_bytes(st.just(claims_value))))
    elif how == "binary":
        claims = b64url(draw(st.binary(max_size=60)))
    elif how == "padded":
        claims = base64.urlsafe_b64encode(draw(json_bytes(st.just(claims_value)))).decode()
    elif how == "deep":
        claims = b64url(draw(deep_json()))
    else:
        claims = draw(hostile_text)
    signature = draw(st.sampled_from(["", "c2ln", b64url(b"signature")]))
    return f"{header}.{claims}.{signature}"


token_values = st.one_of(
    st.sampled_from(["tok-1", "", " ", "a b", "tok\r\nX-Injected: 1", "tok\x1b[31m", "\u00e9", "a" * 70_000]),
    st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=40),
    jwts(),
    hostile_text,
    json_values,
)


@st.composite
def token_bodies(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["dict", "dict", "dict", "json", "binary", "deep"]))
    if shape == "binary":
        return draw(st.binary(max_size=200))
    if shape == "deep":
        return draw(deep_json())
    if shape == "json":
        return draw(json_bytes(json_values))
    body = st.fixed_dictionaries(
        {},
        optional={
            "token": token_values,
            "access_token": token_values,
            "expires_in": claim_numbers,
            "issued_at": hostile_text | json_scalars,
            "refresh_token": hostile_text,
        },
    )
    return draw(json_bytes(body))


@PROBE_SETTINGS
@given(token_bodies(), st.floats(0, 1e7), st.none() | st.floats(0, 4e9))
@example(b'{"token":"a.' + b64url(b'{"exp":1e308,"iat":-1e308}').encode() + b'.c"}', 0.0, 0.0)
@example(b'{"token":"t","expires_in":1e999}', 0.0, 0.0)
def test_parse_token_response_raises_only_value_error(body: bytes, now: float, wall_now: float | None) -> None:
    try:
        info = parse_token_response(body, now, wall_now=wall_now)
    except ValueError as exc:
        assert type(exc) is ValueError, type(exc)
        assert_clean_message(exc)
        return
    assert isinstance(info.token, str) and info.token
    assert all(0x21 <= ord(ch) <= 0x7E for ch in info.token), info.token
    assert isinstance(info.lifetime, float) and math.isfinite(info.lifetime), info.lifetime
    assert 1.0 <= info.lifetime <= MAX_TOKEN_LIFETIME, info.lifetime
    assert math.isfinite(info.expires_at) and info.expires_at == pytest.approx(now + info.lifetime)


range_values = st.one_of(
    st.sampled_from(
        [
            "0-0",
            "0-41",
            "bytes=0-9",
            "bytes 0-9",
            "0-" + "9" * 19,
            "0-" + "9" * 25,
            "5-10",
            "-1",
            "0--1",
            "0-",
            "0-²",
            "0-\uff11",
            "0-٣",
            " 0-5 ",
            "0-5\n",
        ]
    ),
    st.integers(0, 2**70).map(lambda n: f"0-{n}"),
    hostile_text,
)


@PROBE_SETTINGS
@given(st.none() | range_values)
def test_parse_range_end_never_raises(value: str | None) -> None:
    result = parse_range_end(value)
    assert result is None or (type(result) is int and result >= 0)


@PROBE_SETTINGS
@given(hostile_text | st.text(), st.integers(1, 400))
@example("\x1b]0;title\x07visible", 300)
@example("a\x1b[", 300)
@example("\x1b\x1b[31m", 300)
@example("\x9b\x9b", 300)
@example("x" * 500, 1)
def test_clean_text_output_is_clean(text: str, limit: int) -> None:
    out = clean_text(text, limit)
    assert isinstance(out, str)
    assert CLEAN_BAD_RE.search(out) is None, out
    assert len(out.splitlines()) <= 1, out
    assert len(out) <= limit, (len(out), limit)


def test_clean_text_respects_a_zero_limit() -> None:
    assert len(clean_text("abc", 0)) <= 0


@PROBE_SETTINGS
@given(jwts() | hostile_text | st.text(alphabet=".=-_aA0", max_size=30))
@example("a..b")
@example("." * 2)
@example("a." + "b" * 70_000 + ".c")
def test_jwt_claims_never_raise(token: str) -> None:
    claims = jwt_claims(token)
    assert claims is None or isinstance(claims, dict)
    expiry = jwt_expiry(token)
    assert expiry is None or (isinstance(expiry, float) and math.isfinite(expiry))


# ============================================================================================== 3. the client

#: a value replaced by the digest of the answer's body when the answer is sent
BODY_DIGEST = "<digest of the body>"
#: a value replaced by a Content-Range covering the whole body
BODY_RANGE = "<range of the body>"

statuses = st.one_of(
    st.sampled_from([200, 201, 202, 204, 206, 307]),
    st.sampled_from(
        [200, 200, 201, 202, 204, 206, 301, 302, 303, 307, 308, 400, 401, 403, 404, 405, 413, 416, 429, 500, 502, 503]
    ),
    st.integers(200, 599),
)

#: numbers as a sloppy or hostile server writes them: str.isdigit() holds for "²" and "①", int() refuses them
odd_numbers = st.text(alphabet="0123456789\u00b2\u00b3\u00b9\u2460\u0663\uff11- +.", min_size=1, max_size=6)

_header_structured: dict[str, st.SearchStrategy[str]] = {
    "Content-Type": content_types.map(lambda v: v or ""),
    "Docker-Content-Digest": st.one_of(st.just(BODY_DIGEST), valid_digests, bad_digests),
    "Link": link_values,
    "Location": url_values,
    "WWW-Authenticate": www_authenticate_values,
    "Retry-After": retry_after_values | odd_numbers,
    "Range": range_values | odd_numbers.map("0-".__add__),
    "OCI-Chunk-Min-Length": st.one_of(
        st.integers(0, 2**64).map(str),
        st.sampled_from(["0", "-1", "1e6", "9" * 13, "²", "①", "٣", "\uff11", " 5", "5 ", "0x10"]),
        odd_numbers,
        hostile_text,
    ),
    "Content-Range": st.one_of(
        st.just(BODY_RANGE),
        st.sampled_from(["bytes 0-9/10", "bytes 5-9/10", "bytes ²-9/10", "bytes 0-", "bytes */10", "bytes", ""]),
        st.builds(_content_range, odd_numbers, odd_numbers),
        hostile_text,
    ),
}


def header_bytes(value: str | bytes) -> bytes:
    """A header value as an HTTP/1.1 peer may deliver it (h11 refuses NUL and line breaks, strips blanks)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    for bad in (b"\x00", b"\r", b"\n", b"\x0b", b"\x0c"):
        raw = raw.replace(bad, b"")
    return raw.strip(b" \t")


header_value_bytes = st.one_of(
    st.binary(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=30).map(lambda t: t.encode("latin-1")),
)


def header_value(name: str) -> st.SearchStrategy[str | bytes]:
    return st.one_of(_header_structured[name], _header_structured[name], header_value_bytes)


header_entries = st.sampled_from(sorted(_header_structured)).flatmap(
    lambda name: st.tuples(st.just(name), header_value(name))
)


def _joined_headers(
    wanted: dict[str, str | bytes], others: list[tuple[str, str | bytes]]
) -> tuple[tuple[str, str | bytes], ...]:
    return (*wanted.items(), *others)


def header_sets(relevant: tuple[str, ...]) -> st.SearchStrategy[tuple[tuple[str, str | bytes], ...]]:
    """The headers an operation reads, each there about half the time, and a few others."""
    return st.builds(
        _joined_headers,
        st.fixed_dictionaries({}, optional={name: header_value(name) for name in relevant}),
        st.lists(header_entries, max_size=2),
    )


any_headers = st.lists(header_entries, max_size=4).map(tuple)
failures = st.one_of(
    st.just(None), st.just(None), st.just(None), st.sampled_from(["connect", "timeout", "reset", "cut", "cut-protocol"])
)


@dataclass(frozen=True)
class Answer:
    """One generated HTTP answer; :meth:`respond` builds it afresh for each request."""

    status: int
    headers: tuple[tuple[str, str | bytes], ...] = ()
    body: bytes = b""
    chunks: int = 1
    length: str | None = "body"  # "body": Content-Length of the body; None: absent; digits: only for HEAD
    failure: str | None = None  # transport trouble: before the answer, or after part of the body
    failure_text: str = "connection reset"

    def respond(self, request: httpx.Request) -> httpx.Response:
        if self.failure == "connect":
            raise httpx.ConnectError(self.failure_text, request=request)
        if self.failure == "timeout":
            raise httpx.ReadTimeout(self.failure_text, request=request)
        if self.failure == "reset":
            raise httpx.ReadError(self.failure_text, request=request)
        head = request.method == "HEAD"
        body = b"" if head else self.body
        raw_headers: list[tuple[bytes, bytes]] = []
        for name, value in self.headers:
            if value == BODY_DIGEST:
                value = sha256(self.body)
            elif value == BODY_RANGE:
                value = f"bytes 0-{max(len(self.body) - 1, 0)}/{len(self.body)}"
            raw_headers.append((name.encode(), header_bytes(value)))
        if head and self.length is not None:
            length = self.length if self.length.isascii() and self.length.isdigit() else str(len(self.body))
            raw_headers.append((b"Content-Length", length.encode()))
        elif not head and self.length is not None:
            raw_headers.append((b"Content-Length", str(len(body)).encode()))
        pieces = _split(body, self.chunks)
        failure, text = self.failure, self.failure_text

        async def stream() -> AsyncIterator[bytes]:
            for i, piece in enumerate(pieces):
                if failure in ("cut", "cut-protocol") and i == len(pieces) // 2:
                    if failure == "cut":
                        raise httpx.ReadError(text, request=request)
                    raise httpx.RemoteProtocolError(text, request=request)
                yield piece
            if failure in ("cut", "cut-protocol") and not pieces:
                raise httpx.ReadError(text, request=request)

        return httpx.Response(self.status, headers=raw_headers, content=stream(), request=request)


def _split(body: bytes, n: int) -> list[bytes]:
    if not body:
        return []
    size = max(1, -(-len(body) // n))
    return [body[i : i + size] for i in range(0, len(body), size)]


@st.composite
def answers(
    draw: st.DrawFn,
    bodies: st.SearchStrategy[bytes],
    status: st.SearchStrategy[int] = statuses,
    headers: st.SearchStrategy[tuple[tuple[str, str | bytes], ...]] = any_headers,
) -> Answer:
    return Answer(
        status=draw(status),
        headers=draw(headers),
        body=draw(bodies),
        chunks=draw(st.integers(1, 4)),
        length=draw(st.sampled_from(["body", "body", None]) | st.integers(0, 10**20).map(str)),
        failure=draw(failures),
        failure_text=draw(st.sampled_from(["connection reset by peer", ""]) | hostile_text),
    )


GOOD_CONFIG = b'{"architecture":"amd64","os":"linux"}'
GOOD_LAYER = b"layer-bytes" * 10
GOOD_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(GOOD_CONFIG), "size": 37},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(GOOD_LAYER), "size": 110}],
    },
    indent=2,
).encode()
GOOD_INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": sha256(GOOD_MANIFEST),
                "size": len(GOOD_MANIFEST),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
).encode()

tag_lists = json_bytes(
    st.fixed_dictionaries(
        {
            "tags": st.lists(st.sampled_from(["v1", "v2", "latest"]) | hostile_text | json_scalars, max_size=5)
            | json_values
        },
        optional={"name": hostile_text | json_scalars},
    )
)


@dataclass(frozen=True)
class Scenario:
    """What the mock registry, its token realm and object storage answer, in order."""

    anonymous: bool
    ping: Answer
    tokens: tuple[Answer, ...]
    answers: tuple[Answer, ...]
    blob: bytes
    manifest: bytes


#: per operation: the statuses it accepts and the headers it reads
PROFILES: dict[str, tuple[list[int], tuple[str, ...]]] = {
    "get_manifest_tag": ([200], ("Content-Type", "Docker-Content-Digest")),
    "get_manifest_digest": ([200], ("Content-Type", "Docker-Content-Digest")),
    "head_manifest": ([200, 404], ("Content-Type", "Docker-Content-Digest")),
    "list_tags": ([200], ("Link",)),
    "blob_exists": ([200, 307, 404], ("Location",)),
    "open_blob": ([200, 206, 307, 302], ("Location", "Content-Range")),
    "open_blob_unsized": ([200, 206, 307, 302], ("Location", "Content-Range")),
    "open_blob_offset": ([200, 206, 307, 302], ("Location", "Content-Range")),
    "mount_blob": ([201, 202], ("Location", "OCI-Chunk-Min-Length")),
    "start_upload": ([202], ("Location", "OCI-Chunk-Min-Length")),
    "upload_status": ([204, 200], ("Range", "Location")),
}
GOOD_TOKEN = b'{"token":"tok-1","expires_in":300}'
GOOD_PINGS = {
    "anonymous": Answer(200),
    "basic": Answer(401, (("WWW-Authenticate", f'Basic realm="https://{HOST}/"'),)),
    "bearer": Answer(401, (("WWW-Authenticate", f'Bearer realm="{REALM}",service="{HOST}"'),)),
}


def challenged(header: str, body: bytes) -> Answer:
    """A 401 answer to ``GET /v2/`` with ``header`` as its challenge."""
    return Answer(401, (("WWW-Authenticate", header),), body)


@st.composite
def scenarios(draw: st.DrawFn, op: str, bearer: bool = False) -> Scenario:
    """The registry's answers to ``op``; authentication well behaved or (always with ``bearer``) hostile too."""
    ok_statuses, relevant = PROFILES[op]
    blob = draw(st.binary(max_size=64))
    manifest = draw(st.sampled_from([GOOD_MANIFEST, GOOD_INDEX]) | json_bytes(mutated_manifests() | image_manifests))
    bodies = st.one_of(
        st.just(blob),
        st.just(manifest),
        st.binary(max_size=100),
        tag_lists,
        error_bodies(),
        special_raw,
    )
    auth = "hostile" if bearer else draw(st.sampled_from(["anonymous", "anonymous", "basic", "bearer", "hostile"]))
    if auth == "hostile":
        challenge = (
            challenge_headers(scheme="Bearer")
            if bearer
            else st.one_of(challenge_headers(scheme="Bearer"), challenge_headers(scheme="Basic"), challenge_headers())
        )
        ping_401 = st.builds(challenged, challenge, st.binary(max_size=40) | error_bodies())
        ping = draw(ping_401 if bearer else ping_401 | answers(st.binary(max_size=40) | error_bodies()))
        token_answers = answers(
            token_bodies(),
            status=st.sampled_from([200, 200, 200, 200, 401, 403, 404, 429, 500, 503]) | st.integers(200, 599),
            headers=header_sets(("Retry-After", "Content-Type")),
        )
        tokens = tuple(draw(st.lists(token_answers, min_size=1, max_size=3)))
    else:
        ping, tokens = GOOD_PINGS[auth], (Answer(200, (), GOOD_TOKEN),)
    return Scenario(
        anonymous=draw(st.booleans()),
        ping=ping,
        tokens=tokens,
        answers=tuple(
            draw(
                st.lists(
                    answers(bodies, st.one_of(st.sampled_from(ok_statuses), statuses), header_sets(relevant)),
                    min_size=1,
                    max_size=3,
                )
            )
        ),
        blob=blob,
        manifest=manifest,
    )


@dataclass
class Script:
    """The MockTransport handler: the ping, then token and registry answers in order (the last repeats)."""

    scenario: Scenario
    requests: list[httpx.Request] = field(default_factory=list)
    _tokens: int = 0
    _answers: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert len(self.requests) <= MAX_REQUESTS, f"the client sent more than {MAX_REQUESTS} requests: a loop"
        # what a real connection pool does with URLs it cannot connect to (MockTransport takes anything)
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{request.url.scheme}://'.")
        if not request.url.host:
            raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)
        sc = self.scenario
        if request.url.path == "/v2/" and request.url.host == HOST:
            return sc.ping.respond(request)
        if request.url.path == "/token":
            answer = sc.tokens[min(self._tokens, len(sc.tokens) - 1)]
            self._tokens += 1
            return answer.respond(request)
        answer = sc.answers[min(self._answers, len(sc.answers) - 1)]
        self._answers += 1
        return answer.respond(request)


def make_client(scenario: Scenario, script: Script) -> RegistryClient:
    creds = StaticCredentials(None if scenario.anonymous else Credentials.of(USER, PASSWORD))
    return RegistryClient(HOST, creds, FAST, transport=httpx.MockTransport(script))


def check_url(url: object) -> None:
    assert isinstance(url, str)
    parsed = httpx.URL(url)
    assert parsed.scheme in ("http", "https") and parsed.host, url


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


async def op_get_manifest_tag(client: RegistryClient, sc: Scenario) -> None:
    exercise_manifest(await client.get_manifest(REPO, "v1"))


async def op_get_manifest_digest(client: RegistryClient, sc: Scenario) -> None:
    digest = sha256(sc.manifest)
    manifest = await client.get_manifest(REPO, digest)
    assert manifest.digest == digest and manifest.raw == sc.manifest
    exercise_manifest(manifest)


async def op_head_manifest(client: RegistryClient, sc: Scenario) -> None:
    info = await client.head_manifest(REPO, "v1")
    if info is not None:
        assert isinstance(info, ManifestInfo)
        assert VALID_DIGEST_RE.fullmatch(info.digest), info.digest
        assert info.media_type is None or info.media_type in mt.MANIFEST_TYPES, info.media_type
        assert info.size is None or (type(info.size) is int and info.size >= 0), info.size


async def op_list_tags(client: RegistryClient, sc: Scenario) -> None:
    tags = await client.list_tags(REPO)
    assert isinstance(tags, list) and all(isinstance(t, str) for t in tags) and len(set(tags)) == len(tags)


async def op_blob_exists(client: RegistryClient, sc: Scenario) -> None:
    assert isinstance(await client.blob_exists(REPO, sha256(sc.blob)), bool)


async def op_open_blob(client: RegistryClient, sc: Scenario) -> None:
    digest = sha256(sc.blob)
    async with client.open_blob(REPO, digest, len(sc.blob)) as stream:
        data = await read_all(stream)
    assert data == sc.blob


async def op_open_blob_unsized(client: RegistryClient, sc: Scenario) -> None:
    digest = sha256(sc.blob)
    async with client.open_blob(REPO, digest, None) as stream:
        data = await read_all(stream)
    assert sha256(data) == digest


async def op_open_blob_offset(client: RegistryClient, sc: Scenario) -> None:
    async with client.open_blob(REPO, sha256(sc.blob), len(sc.blob) + 8, offset=8) as stream:
        data = await read_all(stream)
    assert isinstance(data, bytes)


async def op_mount_blob(client: RegistryClient, sc: Scenario) -> None:
    location = await client.mount_blob(REPO, sha256(sc.blob), "team/other")
    if location is not None:
        check_url(location)


async def op_start_upload(client: RegistryClient, sc: Scenario) -> None:
    check_url(await client.start_upload(REPO))
    location, minimum = await client.open_upload(REPO)
    check_url(location)
    assert minimum is None or (type(minimum) is int and minimum >= 0)


async def op_upload_status(client: RegistryClient, sc: Scenario) -> None:
    location, committed = await client.upload_status(REPO, f"https://{HOST}/v2/{REPO}/blobs/uploads/u1?_state=s")
    check_url(location)
    assert type(committed) is int and committed >= 0


OPS: dict[str, Callable[[RegistryClient, Scenario], Awaitable[None]]] = {
    "get_manifest_tag": op_get_manifest_tag,
    "get_manifest_digest": op_get_manifest_digest,
    "head_manifest": op_head_manifest,
    "list_tags": op_list_tags,
    "blob_exists": op_blob_exists,
    "open_blob": op_open_blob,
    "open_blob_unsized": op_open_blob_unsized,
    "open_blob_offset": op_open_blob_offset,
    "mount_blob": op_mount_blob,
    "start_upload": op_start_upload,
    "upload_status": op_upload_status,
}


async def run_scenario(op: str, sc: Scenario) -> Script:
    script = Script(sc)
    client = make_client(sc, script)
    try:
        await OPS[op](client, sc)
    except EcrcopyError as exc:
        assert_clean_message(exc)
    finally:
        await client.aclose()
    return script


#: well-formed values of the headers an operation reads (``None``: left out)
GOOD_HEADERS: dict[str, str | None] = {
    "Content-Type": mt.OCI_MANIFEST,
    "Docker-Content-Digest": BODY_DIGEST,
    "Location": f"/v2/{REPO}/blobs/uploads/u1?_state=s",
    "Content-Range": BODY_RANGE,
    "Range": "0-9",
    "OCI-Chunk-Min-Length": None,
    "Link": None,
}
#: hostile values for one header, weighted towards what breaks number and URL parsing
FOCUSED_VALUES: dict[str, st.SearchStrategy[str | bytes]] = {
    **{name: header_value(name) for name in _header_structured},
    "OCI-Chunk-Min-Length": st.one_of(
        odd_numbers,
        st.text(alphabet="0123456789\u00b2\u00b3\u2460", min_size=1, max_size=4),
        header_value("OCI-Chunk-Min-Length"),
    ),
    "Content-Range": st.one_of(
        st.builds(_content_range, odd_numbers, odd_numbers),
        st.builds(_content_range, st.text(alphabet="0123456789\u00b2\u2460"), st.just("9")),
        header_value("Content-Range"),
    ),
    "Range": st.one_of(odd_numbers.map("0-".__add__), header_value("Range")),
    "Link": st.one_of(link_headers(), header_value("Link")),
    "Location": st.one_of(assembled_urls, header_value("Location")),
}


@st.composite
def focused_scenarios(draw: st.DrawFn, op: str) -> Scenario:
    """Well-formed answers to ``op`` except for one header it reads, which is hostile."""
    ok_statuses, relevant = PROFILES[op]
    blob = draw(st.binary(max_size=64))
    manifest = draw(st.sampled_from([GOOD_MANIFEST, GOOD_INDEX]))
    focus = draw(st.sampled_from(relevant))
    auth = draw(st.sampled_from(["anonymous", "basic", "bearer"]))
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        headers: list[tuple[str, str | bytes]] = [
            (name, value) for name in relevant if name != focus and (value := GOOD_HEADERS[name]) is not None
        ]
        headers.append((focus, draw(FOCUSED_VALUES[focus])))
        body = draw(st.sampled_from([blob, manifest]) | tag_lists)
        steps.append(Answer(draw(st.sampled_from(ok_statuses)), tuple(headers), body, draw(st.integers(1, 3))))
    return Scenario(
        anonymous=False,
        ping=GOOD_PINGS[auth],
        tokens=(Answer(200, (), GOOD_TOKEN),),
        answers=tuple(steps),
        blob=blob,
        manifest=manifest,
    )


_AUTH_HEADER_RE = re.compile(r"(Bearer|Basic) [\x21-\x7e]+")


def check_authorization(script: Script) -> None:
    """Every ``Authorization`` the client sent is a well-formed header (no token smuggled line breaks in)."""
    for request in script.requests:
        header = request.headers.get("authorization")
        if header is not None:
            assert _AUTH_HEADER_RE.fullmatch(header), header


def client_property(
    name: str, op: str, strategy: st.SearchStrategy[Scenario], max_examples: int, doc: str
) -> Callable[..., Any]:
    """One async property test of ``op`` against ``strategy``'s scenarios (one test per operation, so each
    gets its own budget and its own minimal example; the scenario is drawn by ``@given``, not ``st.data()``,
    because drawing inside the anyio runner mishandles hypothesis's internal ``StopTest``)."""

    async def test(sc: Scenario) -> None:
        check_authorization(await run_scenario(op, sc))

    test.__name__ = test.__qualname__ = name
    test.__doc__ = doc
    return pytest.mark.anyio(settings(FIXTURE_SETTINGS, max_examples=max_examples)(given(sc=strategy)(test)))


for _op in OPS:
    _name = f"test_client_{_op}_answers_hostile_registry_with_ecrcopy_errors_only"
    globals()[_name] = client_property(
        _name, _op, scenarios(_op), 60, f"{_op}: generated statuses, headers, bodies, transport failures and auth."
    )
    _name = f"test_client_{_op}_survives_one_hostile_header_in_good_answers"
    globals()[_name] = client_property(
        _name, _op, focused_scenarios(_op), 80, f"{_op}: well-formed answers but for one hostile header it reads."
    )
for _op in ("get_manifest_tag", "blob_exists", "start_upload"):
    _name = f"test_token_flow_{_op}_with_hostile_realm_raises_only_ecrcopy_errors"
    globals()[_name] = client_property(
        _name,
        _op,
        scenarios(_op, bearer=True),
        60,
        f"{_op}: GET /v2/ answers 401 with a generated Bearer challenge; the realm answers generated token replies.",
    )


_UPLOAD = f"/v2/{REPO}/blobs/uploads/u1"
_NO_TAGS = b'{"tags":[]}'
#: minimal answers the properties above found (kept as a table: hypothesis does not meet each one every run)
KNOWN_HOSTILE_ANSWERS: list[tuple[str, str, Answer, Answer]] = [
    (
        "redirect-to-javascript",
        "get_manifest_tag",
        GOOD_PINGS["anonymous"],
        Answer(307, (("Location", "javascript:x"),)),
    ),
    ("redirect-no-slash", "head_manifest", GOOD_PINGS["anonymous"], Answer(302, (("Location", f"https:{HOST}/"),))),
    ("redirect-bad-idna", "blob_exists", GOOD_PINGS["anonymous"], Answer(307, (("Location", "https://xn--/"),))),
    ("blob-redirect-bad-idna", "open_blob", GOOD_PINGS["anonymous"], Answer(307, (("Location", "https://xn--/"),))),
    ("blob-redirect-port", "open_blob", GOOD_PINGS["anonymous"], Answer(307, (("Location", "https://h:99999/"),))),
    ("blob-redirect-port-neg", "open_blob", GOOD_PINGS["anonymous"], Answer(307, (("Location", "https://h:-1/"),))),
    (
        "content-range-digit",
        "open_blob",
        GOOD_PINGS["anonymous"],
        Answer(206, (("Content-Range", "bytes \u00b2-9/10"),)),
    ),
    (
        "link-port",
        "list_tags",
        GOOD_PINGS["anonymous"],
        Answer(200, (("Link", '<https://h:99999/>; rel="next"'),), _NO_TAGS),
    ),
    (
        "chunk-min-digit",
        "start_upload",
        GOOD_PINGS["anonymous"],
        Answer(202, (("Location", _UPLOAD), ("OCI-Chunk-Min-Length", "\u00b2"))),
    ),
    ("upload-location-idna", "start_upload", GOOD_PINGS["anonymous"], Answer(202, (("Location", "https://xn--/"),))),
    ("mount-location-idna", "mount_blob", GOOD_PINGS["anonymous"], Answer(202, (("Location", "https://xn--/"),))),
    (
        "status-location-idna",
        "upload_status",
        GOOD_PINGS["anonymous"],
        Answer(204, (("Range", "0-5"), ("Location", "https://xn--/"))),
    ),
    (
        "realm-bad-idna",
        "get_manifest_tag",
        challenged('Bearer realm="https://xn--/token"', b""),
        Answer(200, (), GOOD_MANIFEST),
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("op", "ping", "answer"),
    [case[1:] for case in KNOWN_HOSTILE_ANSWERS],
    ids=[case[0] for case in KNOWN_HOSTILE_ANSWERS],
)
async def test_client_known_hostile_answers_raise_only_ecrcopy_errors(op: str, ping: Answer, answer: Answer) -> None:
    sc = Scenario(False, ping, (Answer(200, (), GOOD_TOKEN),), (answer,), b"", GOOD_MANIFEST)
    check_authorization(await run_scenario(op, sc))


# ============================================================================================== 4. the blob cache

host_keys = st.one_of(
    st.sampled_from(["registry.gitlab.com", "localhost:5000", "[::1]:5000", "127.0.0.1"]), hostile_text
)
repo_values = st.one_of(
    st.sampled_from(
        [
            "group/app",
            "a",
            "a/b/c",
            "a__b",
            "a--b",
            "../x",
            "/a",
            "a/",
            "a//b",
            "A/B",
            "group/app\n",
            "group/app?mount=x",
            "group/app/../../x",
            "a" * 300,
            "a_",
            "a___b",
            "\u0430pp",
        ]
    ),
    hostile_text,
    json_values,
)
cache_dicts = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 1.0, True, "1", 2, 0, None]) | json_scalars,
        "hosts": st.dictionaries(
            host_keys,
            st.dictionaries(digest_strings, st.lists(repo_values, max_size=6) | json_values, max_size=4) | json_values,
            max_size=3,
        )
        | json_values,
    }
)
cache_files = st.one_of(st.binary(max_size=200), json_bytes(json_values), json_bytes(cache_dicts), deep_json())


def _probes(raw: bytes) -> list[tuple[str, str]]:
    probes = [("registry.gitlab.com", sha256(b""))]
    with contextlib.suppress(ValueError, RecursionError):
        data = json.loads(raw)
        hosts = data.get("hosts") if isinstance(data, dict) else None
        for host, digests in hosts.items() if isinstance(hosts, dict) else ():
            for digest in digests if isinstance(digests, dict) else ():
                probes.append((host, digest))
    return probes


@settings(FIXTURE_SETTINGS, max_examples=300)
@given(raw=cache_files)
def test_blob_hints_load_never_raises_and_keeps_only_valid_names(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "blob-locations-v1.json"
    path.write_bytes(raw)
    hints = BlobHints(path)
    hints.load()
    for host, digest in _probes(raw):
        candidates = hints.candidates(host, digest)
        assert isinstance(candidates, list)
        for repo in candidates:
            assert isinstance(repo, str) and REPOSITORY_RE.fullmatch(repo), repo


@settings(FIXTURE_SETTINGS, max_examples=100)
@given(raw=cache_files)
def test_blob_hints_save_over_a_hostile_file_never_raises(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "blob-locations-v1.json"
    path.write_bytes(raw)
    hints = BlobHints(path)
    hints.load()
    digest = sha256(b"layer")
    hints.add("registry.gitlab.com", digest, "group/app")
    hints.save()
    again = BlobHints(path)
    again.load()
    assert again.candidates("registry.gitlab.com", digest)[0] == "group/app"
