"""Properties and examples of the pure protocol helpers in :mod:`ecrcopy._protocol`."""

from __future__ import annotations

import base64
import json
import math
from email.utils import formatdate
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ecrcopy._protocol import (
    DEFAULT_TOKEN_LIFETIME,
    Challenge,
    OciError,
    Scope,
    TokenInfo,
    append_query,
    format_scopes,
    jwt_expiry,
    next_link,
    parse_error_body,
    parse_retry_after,
    parse_scope,
    parse_token_response,
    parse_www_authenticate,
    redact_url,
    same_origin,
    simple_absolute_url,
)

# ---------------------------------------------------------------------------------------------- WWW-Authenticate

schemes = st.from_regex(r"[A-Za-z][A-Za-z0-9_~+.-]{0,12}", fullmatch=True)
param_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}", fullmatch=True)
#: values with the characters that break naive parsers: commas, '=', quotes, backslashes, blanks
quoted_values = st.text(
    st.one_of(st.sampled_from(list(',="\\ \t;:/@')), st.characters(blacklist_categories=("Cs",))), max_size=40
)
bare_values = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def challenges(draw: st.DrawFn) -> tuple[str, dict[str, str], str]:
    """A challenge (scheme, params) and one way of writing it."""
    scheme = draw(schemes)
    names = draw(st.lists(param_names, max_size=5, unique_by=str.lower))
    params: dict[str, str] = {}
    parts: list[str] = []
    for name in names:
        if draw(st.booleans()):
            value = draw(quoted_values)
            written = _quote(value)
        else:
            value = draw(bare_values)
            written = value
        params[name.lower()] = value
        eq = draw(st.sampled_from(["=", " = ", "= ", " ="]))
        parts.append(f"{name}{eq}{written}")
    sep = draw(st.sampled_from([",", ", ", " , ", ",  "]))
    text = scheme + (" " + sep.join(parts) if parts else "")
    return scheme, params, text


@given(st.lists(challenges(), min_size=1, max_size=4), st.sampled_from([", ", ",", " ,  "]))
def test_www_authenticate_round_trip(items: list[tuple[str, dict[str, str], str]], sep: str) -> None:
    header = sep.join(text for _, _, text in items)
    parsed = parse_www_authenticate(header)
    assert [(c.scheme, c.params) for c in parsed] == [(scheme.lower(), params) for scheme, params, _ in items]


@given(st.text())
@example('Bearer realm="unterminated')
@example('Bearer realm="x\\')
@example("=,=,=")
@example(",,,")
@example("Basic ===")
@example('realm="x"')
def test_www_authenticate_never_raises(header: str) -> None:
    result = parse_www_authenticate(header)
    assert all(isinstance(c, Challenge) and c.scheme == c.scheme.lower() for c in result)


def test_ecr_basic_challenge() -> None:
    header = 'Basic realm="https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/",service="ecr.amazonaws.com"'
    [challenge] = parse_www_authenticate(header)
    assert challenge.scheme == "basic"
    assert challenge.realm == "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/"
    assert challenge.service == "ecr.amazonaws.com"
    assert challenge.scope is None and challenge.error is None


def test_gitlab_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://gitlab.com/jwt/auth",service="container_registry",'
        'scope="repository:group/project/app:pull,push"'
    )
    [challenge] = parse_www_authenticate(header)
    assert challenge == Challenge(
        "bearer",
        {
            "realm": "https://gitlab.com/jwt/auth",
            "service": "container_registry",
            "scope": "repository:group/project/app:pull,push",
        },
    )


def test_error_params() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry",'
        'scope="repository:a:pull,push",error="insufficient_scope"'
    )
    assert parse_www_authenticate(header)[0].error == "insufficient_scope"
    header = 'Bearer realm="https://a/t",error="invalid_token",error_description="The access token expired"'
    [challenge] = parse_www_authenticate(header)
    assert challenge.error == "invalid_token"
    assert challenge.params["error_description"] == "The access token expired"


def test_several_challenges_in_one_header() -> None:
    header = 'Bearer realm="https://a/t, with comma",service="s", Basic realm="x=y", Negotiate'
    assert parse_www_authenticate(header) == [
        Challenge("bearer", {"realm": "https://a/t, with comma", "service": "s"}),
        Challenge("basic", {"realm": "x=y"}),
        Challenge("negotiate", {}),
    ]


def test_case_and_escapes() -> None:
    [challenge] = parse_www_authenticate('BEARER Realm="a\\"b\\\\c", SERVICE=svc')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": 'a"b\\c', "service": "svc"}


def test_sloppy_servers() -> None:
    # an unquoted URL as realm (not a token, but seen in the wild)
    [challenge] = parse_www_authenticate("Bearer realm=https://auth.example.com/token,service=registry")
    assert challenge.realm == "https://auth.example.com/token" and challenge.service == "registry"
    # duplicate parameters: the first one wins
    assert parse_www_authenticate('Bearer realm="a",realm="b"')[0].realm == "a"
    # token68 with padding, then another challenge
    assert parse_www_authenticate('Basic dXNlcjpwYXNz==, Bearer realm="r"') == [
        Challenge("basic", {"token68": "dXNlcjpwYXNz=="}),
        Challenge("bearer", {"realm": "r"}),
    ]
    assert parse_www_authenticate("Newauth abc/+d=") == [Challenge("newauth", {"token68": "abc/+d="})]
    assert parse_www_authenticate("") == []


# ---------------------------------------------------------------------------------------------- Link


BASE = "https://registry.example.com/v2/team/app/tags/list?n=2"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            '</v2/team/app/tags/list?n=2&last=b>; rel="next"',
            "https://registry.example.com/v2/team/app/tags/list?n=2&last=b",
        ),
        (
            "<https://other.example.com/v2/x/tags/list?last=b>; rel=next",
            "https://other.example.com/v2/x/tags/list?last=b",
        ),
        (
            '<list?last=c>; type="application/json"; rel="next"',
            "https://registry.example.com/v2/team/app/tags/list?last=c",
        ),
        ('</first>; rel="prev", </second?last=z>;rel="next"', "https://registry.example.com/second?last=z"),
        ('</x?a=1,2>; rel="prev next"', "https://registry.example.com/x?a=1,2"),
        ("</x>; REL=NEXT", "https://registry.example.com/x"),
        ('</x>; rel="prev"', None),
        ('</x>; title="next"', None),
        ("</x>", None),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_next_link(header: str | None, expected: str | None) -> None:
    assert next_link(header, BASE) == expected


@given(st.text())
def test_next_link_never_raises(header: str) -> None:
    result = next_link(header, BASE)
    assert result is None or isinstance(result, str)


# ---------------------------------------------------------------------------------------------- error bodies


def test_oci_error_body() -> None:
    body = json.dumps(
        {
            "errors": [
                {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": {"digest": "x"}},
                {"code": "DENIED", "message": "requested access to the resource is denied"},
                {"code": "A"},
                {"code": "B"},
            ]
        }
    ).encode()
    assert parse_error_body(body) == [
        OciError("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry"),
        OciError("DENIED", "requested access to the resource is denied"),
        OciError("A", ""),
    ]
    assert len(parse_error_body(body, limit=10)) == 4


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", []),
        (b"   \n", []),
        (b"404 page not found\n", [OciError("", "404 page not found")]),
        (b"<html>\n  <body>Bad   Gateway</body>\n</html>", [OciError("", "<html> <body>Bad Gateway</body> </html>")]),
        (b'{"errors": []}', []),
        (b'{"errors": "nope"}', []),
        (b'{"errors": [1, "x", null]}', []),
        (b'{"error": "invalid_grant"}', [OciError("", "invalid_grant")]),
        (
            b'{"message": "429 Too Many Requests", "code": "TOOMANYREQUESTS"}',
            [OciError("TOOMANYREQUESTS", "429 Too Many Requests")],
        ),
        (b"[1, 2]", []),
        (b"\xff\xfe\x00garbage", [OciError("", "\ufffd\ufffd garbage")]),  # control characters become blanks
        (b"[" * 5000, [OciError("", "[" * 299 + "\u2026")]),  # deeper than the JSON parser's recursion limit
        (
            b'{"errors": [{"code": "\\u001b[31mX", "message": "\\u001b[31mred\\u001b[0m\\r\\nnext"}]}',
            [OciError("", "red next")],
        ),
    ],
)
def test_error_body_variants(body: bytes, expected: list[OciError]) -> None:
    assert parse_error_body(body) == expected


def test_error_body_messages_are_capped() -> None:
    [error] = parse_error_body(json.dumps({"errors": [{"code": "X", "message": "m" * 10_000}]}).encode())
    assert len(error.message) == 300
    [error] = parse_error_body(b"x" * 100_000)
    assert len(error.message) == 300


@given(st.binary(max_size=2000))
def test_error_body_never_raises(body: bytes) -> None:
    assert all(isinstance(e, OciError) for e in parse_error_body(body))


# ---------------------------------------------------------------------------------------------- Retry-After

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("99999999", 3600.0),
        ("1" + "0" * 18, 3600.0),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
        (formatdate(NOW + 30, localtime=False).replace("-0000", "GMT"), 30.0),
        (formatdate(NOW + 45, localtime=False), 45.0),  # "-0000": still GMT
        (formatdate(NOW + 10**7, usegmt=True), 3600.0),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
        ("tomorrow", None),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("1_000", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    result = parse_retry_after(value, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


@given(st.text())
@example("Sun, 06 Nov 1994 08:49:37 GMT")
@example("Sunday, 06-Nov-94 08:49:37 GMT")
@example("Sun Nov  6 08:49:37 1994")
def test_retry_after_never_raises_and_is_bounded(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or (0.0 <= result <= 3600.0 and math.isfinite(result))


def test_retry_after_uses_the_clock_by_default() -> None:
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == 3600.0


# ---------------------------------------------------------------------------------------------- scopes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:team/app:pull", Scope("repository", "team/app", frozenset({"pull"}))),
        ("repository:team/app:pull,push", Scope("repository", "team/app", frozenset({"pull", "push"}))),
        (
            "repository:localhost:5000/team/app:push,pull",
            Scope("repository", "localhost:5000/team/app", frozenset({"pull", "push"})),
        ),
        ("registry:catalog:*", Scope("registry", "catalog", frozenset({"*"}))),
        ("repository:a:", Scope("repository", "a", frozenset())),
        ("repository:a:pull,,push,", Scope("repository", "a", frozenset({"pull", "push"}))),
    ],
)
def test_parse_scope(text: str, expected: Scope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize("text", ["", "repository", "repository:a", ":a:pull", "repository::pull", "::"])
def test_parse_scope_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid scope"):
        parse_scope(text)


_names = st.from_regex(
    r"(?:[a-z0-9.-]{1,20}(?::[0-9]{1,5})?/)?[a-z0-9]{1,10}(?:/[a-z0-9_.-]{1,10}){0,3}", fullmatch=True
)
_actions = st.frozensets(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1)
scopes = st.builds(Scope, st.sampled_from(["repository", "registry", "repository(plugin)"]), _names, _actions)


@given(scopes)
def test_scope_round_trip(scope: Scope) -> None:
    assert parse_scope(str(scope)) == scope


@given(st.frozensets(scopes, max_size=8))
def test_format_scopes_merges_per_repository(items: frozenset[Scope]) -> None:
    formatted = format_scopes(items)
    parsed = [parse_scope(text) for text in formatted]
    keys = [(s.type, s.name) for s in parsed]
    assert keys == sorted(set(keys))  # one entry per repository, stable order
    for scope in parsed:
        expected = set().union(*(s.actions for s in items if (s.type, s.name) == (scope.type, scope.name)))
        assert scope.actions == expected
        assert str(scope) in formatted  # actions sorted in the text


def test_format_scopes_example() -> None:
    items = frozenset(
        {
            Scope("repository", "dst", frozenset({"push"})),
            Scope("repository", "dst", frozenset({"pull"})),
            Scope("repository", "src", frozenset({"pull"})),
            Scope("repository", "localhost:5000/x", frozenset({"pull"})),
        }
    )
    assert format_scopes(items) == [
        "repository:dst:pull,push",
        "repository:localhost:5000/x:pull",
        "repository:src:pull",
    ]
    assert format_scopes(frozenset()) == []


# ---------------------------------------------------------------------------------------------- token responses


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_jwt(claims: dict[str, object]) -> str:
    """A JWT shaped like GitLab's (RS256 header with ``kid``); the signature is random bytes."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "ABCD:EFGH:IJKL"}
    return ".".join(
        [
            _b64url(json.dumps(header).encode()),
            _b64url(json.dumps(claims).encode()),
            _b64url(bytes(range(256))),
        ]
    )


def test_token_with_expires_in() -> None:
    info = parse_token_response(b'{"token": "abc", "expires_in": 300, "issued_at": "2024-01-01T00:00:00Z"}', NOW)
    assert info == TokenInfo("abc", NOW + 300, 300.0)
    assert "abc" not in repr(info)


def test_access_token_alone_and_token_preferred() -> None:
    assert parse_token_response(b'{"access_token": "oauth", "expires_in": 120}', NOW).token == "oauth"
    assert parse_token_response(b'{"token": "t", "access_token": "a"}', NOW).token == "t"
    assert parse_token_response(b'{"token": "", "access_token": "a"}', NOW).token == "a"


def test_gitlab_token_without_expires_in_uses_jwt_exp() -> None:
    exp = int(NOW) + 900
    token = make_jwt({"iss": "gitlab-issuer", "aud": "container_registry", "iat": int(NOW), "exp": exp, "access": []})
    assert jwt_expiry(token) == exp
    info = parse_token_response(json.dumps({"token": token}).encode(), NOW)
    assert info.expires_at == exp and info.lifetime == pytest.approx(900)
    # a JWT that looks expired on this clock (no iat to measure by): the default lifetime, never 0 or
    # negative, so a runner whose clock is ahead does not fetch a token per request
    stale = make_jwt({"exp": int(NOW) - 10})
    info = parse_token_response(json.dumps({"token": stale}).encode(), NOW, wall_now=NOW)
    assert info.lifetime == DEFAULT_TOKEN_LIFETIME and info.expires_at == NOW + DEFAULT_TOKEN_LIFETIME


def test_expires_in_wins_over_jwt_exp() -> None:
    token = make_jwt({"exp": int(NOW) + 900})
    info = parse_token_response(json.dumps({"token": token, "expires_in": 60}).encode(), NOW)
    assert info.expires_at == NOW + 60


@pytest.mark.parametrize(
    "body",
    [
        {"token": "opaque"},
        {"token": "opaque", "expires_in": 0},
        {"token": "opaque", "expires_in": -5},
        {"token": "opaque", "expires_in": "300"},
        {"token": "opaque", "expires_in": True},
        {"token": "opaque", "expires_in": 10**400},
        {"token": "a.b.c"},
        {"token": make_jwt({"exp": "soon"})},
        {"token": make_jwt({"exp": True})},
        {"token": make_jwt({"exp": 10**400})},
        {"token": make_jwt({"nbf": 1})},
        {"token": "x." + _b64url(b"[" * 5000) + ".y"},
        {"token": "x." + _b64url(b"\xff\xfe") + ".y"},
        {"token": "x." + _b64url(b"[1]") + ".y"},
    ],
)
def test_token_lifetime_defaults_to_60s(body: dict[str, object]) -> None:
    info = parse_token_response(json.dumps(body).encode(), NOW)
    assert info.lifetime == 60.0 and info.expires_at == NOW + 60


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"token"',
        b"{}",
        b'{"token": null}',
        b'{"token": 5}',
        b'{"access_token": ""}',
        b"[" * 5000,
    ],
)
def test_token_response_without_token(body: bytes) -> None:
    with pytest.raises(ValueError, match="token"):
        parse_token_response(body, NOW)


@given(
    st.binary(max_size=500)
    | st.dictionaries(
        st.sampled_from(["token", "access_token", "expires_in"]),
        st.from_type(object).filter(lambda o: isinstance(o, (int, float, str, bool, type(None)))),
    ).map(lambda d: json.dumps(d).encode())
)
def test_token_response_raises_only_value_error(body: bytes) -> None:
    try:
        info = parse_token_response(body, NOW)
    except ValueError:
        return
    assert info.token and math.isfinite(info.expires_at) and info.lifetime >= 0


@given(st.text())
@example("a..b")
@example("..")
def test_jwt_expiry_never_raises(token: str) -> None:
    result = jwt_expiry(token)
    assert result is None or math.isfinite(result)


# ---------------------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://r.example.com/v2/r/blobs/uploads/abc?_state=xyz",
            "https://r.example.com/v2/r/blobs/uploads/abc?_state=xyz&digest=sha256%3A00",
        ),
        (
            "https://r.example.com/v2/r/blobs/uploads/abc",
            "https://r.example.com/v2/r/blobs/uploads/abc?digest=sha256%3A00",
        ),
        ("/v2/r/blobs/uploads/abc?_state=a%2Bb%3D", "/v2/r/blobs/uploads/abc?_state=a%2Bb%3D&digest=sha256%3A00"),
        ("http://localhost:5000/u?x=1#frag", "http://localhost:5000/u?x=1&digest=sha256%3A00#frag"),
    ],
)
def test_append_query(url: str, expected: str) -> None:
    assert append_query(url, digest="sha256:00") == expected


_qtext = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=15)


@given(
    st.lists(st.tuples(_qtext, st.text(st.characters(blacklist_categories=("Cs",)), max_size=15)), max_size=6), _qtext
)
def test_append_query_preserves_existing_params(original: list[tuple[str, str]], digest: str) -> None:
    url = "https://r.example.com/v2/team/app/blobs/uploads/5f0c" + (f"?{urlencode(original)}" if original else "")
    result = append_query(url, digest=digest)
    parts = urlsplit(result)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "r.example.com", "/v2/team/app/blobs/uploads/5f0c")
    assert parse_qsl(parts.query, keep_blank_values=True) == [*original, ("digest", digest)]


def test_append_query_several() -> None:
    url = append_query("https://r/v2/a/blobs/uploads/", mount="sha256:1", **{"from": "b/c"})
    assert parse_qsl(urlsplit(url).query) == [("mount", "sha256:1"), ("from", "b/c")]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://r.example.com/v2/", "https://r.example.com:443/v2/x", True),
        ("http://localhost/v2/", "http://localhost:80/other", True),
        ("https://R.Example.com/a", "https://r.example.com/b", True),
        ("http://localhost:5000/a", "http://localhost:5000/b?x=1", True),
        ("https://r.example.com/a", "http://r.example.com/a", False),
        ("https://r.example.com/a", "https://r.example.com:8443/a", False),
        ("http://localhost:5000/a", "http://localhost:5001/a", False),
        (
            "https://123.dkr.ecr.eu-west-1.amazonaws.com/v2/r/blobs/sha256:0",
            "https://prod-eu-west-1-starport-layer-bucket.s3.eu-west-1.amazonaws.com/x?X-Amz-Signature=s",
            False,
        ),
        ("https://r.example.com/a", "https://evil.example.com/a", False),
    ],
)
def test_same_origin(a: str, b: str, same: bool) -> None:
    assert same_origin(a, b) is same
    assert same_origin(b, a) is same


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://s3.example.com/bucket/key?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://s3.example.com/bucket/key",
        ),
        ("https://r/v2/a/blobs/uploads/u?_state=secret#frag", "https://r/v2/a/blobs/uploads/u"),
        ("https://user:pa55word@auth.example.com/token?x=1", "https://auth.example.com/token"),
        ("http://localhost:5000/v2/", "http://localhost:5000/v2/"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


_url_chars = st.sampled_from([*"aZ09-._~!$&'()*+,;=:@/?%#[] \"<>\\^`{|}é", "%2F", "%3d", "..", "."])
_locations = st.one_of(
    st.builds(
        lambda scheme, host, port, path, query: f"{scheme}://{host}{port}{path}{query}",
        st.sampled_from(["http", "https", "HTTP", "ftp"]),
        st.sampled_from(
            [
                "127.0.0.1",
                "s3.example",
                "S3.Example",
                "a-b.c",
                "[::1]",
                "h_x",
                "-h",
                "999.1.1.1",
                "01.02.03.04",
                "1.2.3",
                "10.0.12.255",
                "255.255.255.255",
                "256.1.1.1",
                "0.0.0.0",
                "1.2.3.4.5",
                "00.1.1.1",
            ]
        ),
        st.sampled_from(["", ":80", ":443", ":9000", ":0", ":70000"]),
        st.lists(_url_chars, max_size=12).map(lambda p: "/" + "".join(p)) | st.just(""),
        st.lists(_url_chars, max_size=12).map(lambda q: "?" + "".join(q)) | st.just(""),
    ),
    st.lists(_url_chars, max_size=12).map("".join),  # relative references of every kind
)


@settings(max_examples=3000, deadline=None)
@given(
    location=_locations, base=st.sampled_from(["http://127.0.0.1:5000/v2/a/blobs/uploads/", "https://gl.example/v2/"])
)
@example(location="http://127.0.0.1:9000/bucket/data?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=ab", base="http://x/")
def test_a_location_taken_as_it_is_is_what_httpx_would_resolve(location: str, base: str) -> None:
    """The fast path for ``Location`` headers (no httpx URL parse) changes nothing: wherever it
    applies, httpx's own resolution gives the very same URL; elsewhere httpx resolves it."""
    import httpx

    from ecrcopy._client import resolve_location

    try:
        expected: str | None = str(httpx.URL(base).join(location))
        parsed = httpx.URL(expected)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            expected = None
    except (httpx.InvalidURL, ValueError, UnicodeError):
        expected = None
    if simple_absolute_url(location):
        assert expected == location
    try:
        got: str | None = resolve_location(base, location)
    except ValueError:
        got = None
    assert got == expected
