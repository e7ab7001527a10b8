"""The ECR API client without botocore's client: SigV4 signatures, endpoint and credential
resolution, retries and error mapping, secrets (``_sigv4.py``, ``_aws.py``, ``EcrApi``).

botocore is the oracle: every signature is recomputed with its signer and every region's endpoint
compared with what its client resolves. End to end, every migration test signs against the ECR
emulation's front, which recomputes each signature.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ecrcopy
from ecrcopy._aws import check_region, default_endpoint, partitions, resolve_target
from ecrcopy._ecr import MAX_ATTEMPTS, EcrApi
from ecrcopy._sigv4 import sign
from ecrcopy.testing import EcrEmulator, GitLabEmulator

from .test_migrate import EXPECTED, cli_env, digest_at, migrate, seed, source_digest

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzzSecret"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQToken"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def ecr(tmp_path: Path) -> Iterator[EcrEmulator]:
    with EcrEmulator(tmp_path / "ecr") as emulator:
        seed(emulator)
        yield emulator


@pytest.fixture
def gitlab_ci(tmp_path: Path) -> Iterator[GitLabEmulator]:
    with GitLabEmulator(tmp_path / "gitlab") as emulator:
        yield emulator


def botocore_signature(
    method: str, url: str, headers: dict[str, str], body: bytes, *, token: str | None, region: str, service: str
) -> str:
    """The signature botocore computes for the request as it went out (headers include ours)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method=method, url=url, data=body, headers={k: v for k, v in headers.items() if k != "Authorization"}
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = SigV4Auth(Credentials(KEY_ID, SECRET, token), service, region)
    return str(auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request))


_token_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40).filter(
    lambda v: v.strip() != ""
)
_query_part = st.lists(
    st.sampled_from(["a", "Z", "0", "-", "_", ".", "~", "%20", "%2F", "%3D", "%25"]), max_size=6
).map("".join)
_segments = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%20:@", min_size=0, max_size=8), max_size=4
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "PUT"]),
    port=st.sampled_from([None, 443, 80, 8443, 4566]),
    scheme=st.sampled_from(["http", "https"]),
    segments=_segments,
    trailing=st.booleans(),
    query=st.lists(st.tuples(_query_part, _query_part), max_size=3),
    headers=st.dictionaries(_token_chars.map(lambda n: "X-Test-" + n), _header_values, max_size=4),
    body=st.binary(max_size=200),
    token=st.none() | st.just(TOKEN),
    region=st.sampled_from(["us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1"]),
    service=st.sampled_from(["ecr", "sts"]),
    when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)),
)
def test_signatures_match_botocores(
    method: str,
    port: int | None,
    scheme: str,
    segments: list[str],
    trailing: bool,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    region: str,
    service: str,
    when: datetime,
) -> None:
    path = "/" + "/".join(segments) + ("/" if trailing and segments else "")
    url = f"{scheme}://api.ecr.{region}.amazonaws.com{f':{port}' if port else ''}{path}"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query)
    headers = {"Content-Type": "application/x-amz-json-1.1", **headers}
    added = sign(
        method,
        url,
        headers,
        body,
        access_key=KEY_ID,
        secret_key=SECRET,
        session_token=token,
        region=region,
        service=service,
        now=when,
    )
    sent = {**headers, **added}
    ours = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=(\S+), SignedHeaders=(\S+), Signature=([0-9a-f]{64})", added["Authorization"]
    )
    assert ours is not None
    assert ours[1] == f"{KEY_ID}/{when:%Y%m%d}/{region}/{service}/aws4_request"
    assert ours[3] == botocore_signature(method, url, sent, body, token=token, region=region, service=service)
    assert ("X-Amz-Security-Token" in added) == (token is not None)
    assert SECRET not in added["Authorization"]


def test_every_region_gets_the_endpoint_botocore_resolves() -> None:
    import botocore.session

    session = botocore.session.Session()
    regions = [r for p in partitions() for r in p["regions"] if not r.endswith("-global")]
    assert len(regions) > 30
    for region in regions:
        client = session.create_client("ecr", region_name=region, aws_access_key_id="k", aws_secret_access_key="s")
        try:
            assert default_endpoint(region) == client.meta.endpoint_url, region
        finally:
            client.close()


@pytest.mark.parametrize("region", ["xx-nowhere-1", "us-east-1.evil.example", "US-EAST-1", "", "us-east-1/x"])
def test_unknown_or_malformed_regions_are_refused(region: str) -> None:
    with pytest.raises(ecrcopy.ConfigurationError, match="unknown AWS region"):
        check_region(region)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def _use_only(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """These AWS variables and no others (the machine's own, e.g. AWS_CA_BUNDLE, are removed)."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_the_environment_settles_it_without_importing_botocore(tmp_path: Path) -> None:
    """The CI case: keys, region and endpoint variable in the environment; botocore stays unloaded."""
    code = (
        "import sys\n"
        "from ecrcopy._aws import resolve_target\n"
        "t = resolve_target(region='eu-west-1', profile=None, endpoint_url=None)\n"
        "print(t.resolved_by, t.endpoint, 'botocore' in sys.modules, 'boto3' in sys.modules)\n"
    )
    env = {"PATH": os.environ["PATH"], **_env(tmp_path), "AWS_SESSION_TOKEN": TOKEN}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["environment", "https://api.ecr.eu-west-1.amazonaws.com", "False", "False"]
    env["AWS_ENDPOINT_URL_ECR"] = "https://vpce-1.api.ecr.eu-west-1.vpce.amazonaws.com/"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["environment", "https://vpce-1.api.ecr.eu-west-1.vpce.amazonaws.com"]


@pytest.mark.parametrize(
    ("change", "region"),
    [
        ({"AWS_PROFILE": "ci"}, "us-east-1"),
        ({}, None),  # the region must come from a profile
        ({"AWS_SECRET_ACCESS_KEY": ""}, "us-east-1"),  # partial keys: botocore's error
        ({"AWS_USE_FIPS_ENDPOINT": "true"}, "us-east-1"),
        ({"AWS_USE_DUALSTACK_ENDPOINT": "true"}, "us-east-1"),
        ({"AWS_CONFIG_FILE": "{config}"}, "us-east-1"),
    ],
)
def test_anything_else_is_resolved_by_botocore_as_botocore_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, str], region: str | None
) -> None:
    import botocore.session

    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-north-1\n\n[profile ci]\nregion = eu-north-1\n")
    env = _env(tmp_path, **{k: v.replace("{config}", str(config)) for k, v in change.items()})
    if "AWS_PROFILE" in change or region is None:
        env["AWS_CONFIG_FILE"] = str(config)
    _use_only(monkeypatch, env)
    if not env.get("AWS_SECRET_ACCESS_KEY"):
        with pytest.raises(ecrcopy.ConfigurationError, match="AWS configuration"):
            resolve_target(region=region, profile=None, endpoint_url=None)
        return
    target = resolve_target(region=region, profile=None, endpoint_url=None)
    assert target.resolved_by == "botocore"
    expected_region = region or "eu-north-1"
    assert target.region == expected_region
    client = botocore.session.Session().create_client("ecr", region_name=expected_region)
    assert target.endpoint == client.meta.endpoint_url
    client.close()
    keys = target.keys.keys()
    assert keys.access_key == KEY_ID and keys.secret_key.get_secret_value() == SECRET
    assert SECRET not in repr(target) and SECRET not in repr(keys)


def test_a_named_profile_that_does_not_exist_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ecrcopy.ConfigurationError, match="profile"):
        resolve_target(region="us-east-1", profile="nope", endpoint_url=None)


def test_a_profile_with_its_own_endpoint_and_keys_migrates(
    tmp_path: Path, ecr: EcrEmulator, gitlab_ci: GitLabEmulator
) -> None:
    """A workstation set-up: no keys in the environment, a profile in the config and credentials
    files (region, endpoint_url, keys) -- botocore resolves it all and the migration runs."""
    config = tmp_path / "aws-config"
    config.write_text(f"[profile mirror]\nregion = {ecr.region}\nendpoint_url = {ecr.api_url}\n")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[mirror]\naws_access_key_id = {ecr.access_key_id}\naws_secret_access_key = {ecr.secret_access_key}\n"
    )
    env = cli_env(ecr, gitlab_ci)
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL_ECR",
    ):
        del env[key]
    env.update(AWS_PROFILE="mirror", AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    proc = migrate("--debug", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "configuration from botocore" in proc.stderr
    for (repo, tag), path in EXPECTED.items():
        assert digest_at(gitlab_ci, path, tag) == source_digest(ecr, repo, tag)
    assert ecr.secret_access_key not in proc.stdout + proc.stderr


def test_a_migration_with_keys_from_the_environment_never_loads_botocore(
    ecr: EcrEmulator, gitlab_ci: GitLabEmulator
) -> None:
    code = "import sys, ecrcopy\nr = ecrcopy.migrate()\nprint(r.ok, 'botocore' in sys.modules)\n"
    env = cli_env(ecr, gitlab_ci, AWS_CONFIG_FILE="/nonexistent/aws-config")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["True", "False"], proc.stdout + proc.stderr


# ------------------------------------------------------------------ the wire, through MockTransport


Handler = Callable[[httpx.Request], httpx.Response]


def _api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handler: Handler, **source: Any) -> EcrApi:
    _use_only(monkeypatch, _env(tmp_path, AWS_SESSION_TOKEN=TOKEN))
    src = ecrcopy.EcrSource(region="eu-west-1", **source)
    return EcrApi(src, transport=httpx.MockTransport(handler), backoff=0.001)


def _checked(reply: Handler, seen: list[httpx.Request]) -> Handler:
    """Answers with ``reply`` after checking the request is a correctly signed ECR JSON call."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.method == "POST" and request.url.path == "/"
        assert request.headers["Content-Type"] == "application/x-amz-json-1.1"
        assert request.headers["X-Amz-Target"].startswith("AmazonEC2ContainerRegistry_V20150921.")
        assert request.headers["X-Amz-Security-Token"] == TOKEN
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("user-agent", "accept-encoding", "accept", "connection", "content-length")
        }
        canonical = {
            {
                "content-type": "Content-Type",
                "x-amz-target": "X-Amz-Target",
                "x-amz-date": "X-Amz-Date",
                "x-amz-security-token": "X-Amz-Security-Token",
                "host": "Host",
                "authorization": "Authorization",
            }.get(k.lower(), k): v
            for k, v in headers.items()
        }
        signature = re.search(r"Signature=([0-9a-f]+)", request.headers["Authorization"])
        assert signature is not None
        assert signature[1] == botocore_signature(
            "POST", str(request.url), canonical, request.content, token=TOKEN, region="eu-west-1", service="ecr"
        )
        return reply(request)

    return handler


def _error(status: int, code: str, message: str = "no") -> httpx.Response:
    return httpx.Response(status, json={"__type": f"com.amazonaws.ecr#{code}", "message": message})


def test_throttling_is_retried_then_answered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    answers = [
        _error(400, "ThrottlingException", "Rate exceeded"),
        httpx.Response(503, text="<html>busy</html>"),
        httpx.Response(200, json={"repositories": [{"repositoryName": "team/a"}]}),
    ]
    import ecrcopy._ecr

    signed: list[str] = []
    real_sign = ecrcopy._ecr.sign

    def counting_sign(*args: Any, **kwargs: Any) -> dict[str, str]:
        signed.append(args[0])
        return real_sign(*args, **kwargs)

    monkeypatch.setattr(ecrcopy._ecr, "sign", counting_sign)
    with _api(tmp_path, monkeypatch, _checked(lambda r: answers.pop(0), seen)) as api:
        assert api.repositories() == ["team/a"]
    assert len(seen) == 3
    assert api.calls == ["DescribeRepositories"]  # one call, three attempts ...
    assert signed == ["POST"] * 3  # ... each signed afresh (a retry hours later needs a new date)


def test_persistent_throttling_ends_in_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    handler = _checked(lambda r: _error(400, "ThrottlingException", "Rate"), seen)
    with (
        _api(tmp_path, monkeypatch, handler) as api,
        pytest.raises(ecrcopy.RegistryUnavailable, match=r"DescribeRepositories: .*ThrottlingException") as info,
    ):
        api.repositories()
    assert len(seen) == MAX_ATTEMPTS
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("answer", "error", "fragment"),
    [
        (_error(400, "AccessDeniedException", "not authorized"), ecrcopy.AuthenticationError, "iam-policy"),
        (_error(400, "UnrecognizedClientException", "bad token"), ecrcopy.AuthenticationError, "rejected"),
        (_error(400, "RepositoryNotFoundException", "gone"), ecrcopy.NotFound, "gone"),
        (_error(400, "InvalidParameterException", "odd"), ecrcopy.Denied, "InvalidParameterException: odd"),
        (httpx.Response(403, text="<html>proxy says no</html>"), ecrcopy.Denied, "HTTP 403"),
        (httpx.Response(200, text="not json"), ecrcopy.RegistryUnavailable, "not a JSON object"),
        (httpx.Response(200, json=[1, 2]), ecrcopy.RegistryUnavailable, "not a JSON object"),
        (
            httpx.Response(400, headers={"x-amzn-ErrorType": "AccessDeniedException:http://internal"}),
            ecrcopy.AuthenticationError,
            "access denied",
        ),
    ],
)
def test_answers_become_the_projects_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: httpx.Response, error: type[Exception], fragment: str
) -> None:
    with _api(tmp_path, monkeypatch, lambda r: answer) as api, pytest.raises(error, match=re.escape(fragment)) as info:
        api.repositories()
    assert "\n" not in str(info.value) and SECRET not in str(info.value) and TOKEN not in str(info.value)


def test_a_listing_whose_page_token_comes_back_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"imageDetails": [], "nextToken": "same"})

    with (
        _api(tmp_path, monkeypatch, _checked(reply, seen)) as api,
        pytest.raises(ecrcopy.RegistryUnavailable, match="repeated a page token"),
    ):
        api.images("team/a")
    assert len(seen) == 2
    assert json.loads(seen[1].content)["nextToken"] == "same"


def test_an_oversized_answer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ecrcopy._ecr.MAX_ANSWER", 1000)
    with (
        _api(tmp_path, monkeypatch, lambda r: httpx.Response(200, json={"x": "y" * 5000})) as api,
        pytest.raises(ecrcopy.RegistryUnavailable, match="more than 1000 bytes"),
    ):
        api.repositories()


def test_an_endpoint_without_the_image_status_filter_lists_active_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bodies: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "imageStatus" in body["filter"]:
            return _error(400, "InvalidParameterException", "Unknown filter imageStatus")
        pushed = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
        details = [
            {
                "imageDigest": "sha256:" + "a" * 64,
                "imageTags": ["v1", 7],
                "imagePushedAt": pushed,
                "imageSizeInBytes": 10,
                "imageManifestMediaType": ["not", "text"],
            },
            "junk",
        ]
        return httpx.Response(200, json={"imageDetails": details})

    with caplog.at_level(logging.WARNING, "ecrcopy"), _api(tmp_path, monkeypatch, reply) as api:
        repository = api.images("team/a")
    assert [b["filter"] for b in bodies] == [{"tagStatus": "ANY", "imageStatus": "ANY"}, {"tagStatus": "ANY"}]
    assert "archived images of team/a are not listed" in caplog.text
    (image,) = repository.images
    assert image.tags == ("v1",) and image.media_type is None
    assert image.pushed_at == datetime(2026, 1, 2, tzinfo=UTC)


def test_authorization_reads_the_token_and_its_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expires = datetime.now(UTC) + timedelta(hours=12)
    token = base64.b64encode(b"AWS:data-plane-Pw-77").decode()
    data = {"authorizationToken": token, "expiresAt": expires.timestamp(), "proxyEndpoint": "https://1.dkr.x"}
    with _api(tmp_path, monkeypatch, lambda r: httpx.Response(200, json={"authorizationData": [data]})) as api:
        credentials, expires_at, endpoint = api.authorization()
    assert credentials.username == "AWS" and credentials.password.get_secret_value() == "data-plane-Pw-77"
    assert abs(expires_at - expires.timestamp()) < 0.01 and endpoint == "https://1.dkr.x"
    assert "data-plane-Pw-77" not in repr(credentials)


def test_unreachable_endpoint_is_retried_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("connection refused", request=request)

    with (
        _api(tmp_path, monkeypatch, refuse) as api,
        pytest.raises(ecrcopy.RegistryUnavailable, match=r"cannot reach the ECR API at https://api\.ecr\.eu-west-1"),
    ):
        api.repositories()
    assert len(attempts) == MAX_ATTEMPTS


def test_secrets_stay_out_of_reprs_and_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    answers = [_error(400, "ThrottlingException"), httpx.Response(200, json={"repositories": []})]
    with caplog.at_level(logging.DEBUG), _api(tmp_path, monkeypatch, lambda r: answers.pop(0)) as api:
        api.repositories()
        text = repr(api) + repr(api._target) + repr(api._target.keys.keys()) + caplog.text
    assert "ThrottlingException" in caplog.text  # the retry was logged ...
    assert SECRET not in text and TOKEN not in text  # ... and nothing secret was


def test_the_guard_refuses_writes_before_sending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    with _api(tmp_path, monkeypatch, _checked(lambda r: httpx.Response(200, json={}), seen)) as api:
        for action in ("PutImage", "BatchDeleteImage", "UpdateImageStorageClass", "SetRepositoryPolicy"):
            with pytest.raises(ecrcopy.ConfigurationError, match=f"refuses to call ecr:{action}"):
                api._post(action, {}, action)
    assert seen == [] and api.calls == []


def test_a_refused_role_is_an_authentication_error() -> None:
    """STS refusing AssumeRoleWithWebIdentity (GitLab OIDC with a wrong trust policy) surfaces
    as botocore's ClientError when the keys are fetched: one clear error, not a traceback."""
    import botocore.exceptions

    from ecrcopy._aws import BotocoreKeys

    class Refused:
        def get_frozen_credentials(self) -> None:
            raise botocore.exceptions.ClientError(
                {
                    "Error": {
                        "Code": "AccessDenied",
                        "Message": "Not authorized to perform\\nsts:AssumeRoleWithWebIdentity",
                    }
                },
                "AssumeRoleWithWebIdentity",
            )

    with pytest.raises(ecrcopy.AuthenticationError, match="cannot get AWS credentials: AccessDenied: Not auth") as info:
        BotocoreKeys(Refused()).keys()
    assert "\n" not in str(info.value)


def test_a_certificate_the_runner_does_not_trust_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    attempts: list[int] = []

    def untrusted(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate")
        except ssl.SSLCertVerificationError as exc:
            raise httpx.ConnectError("certificate verify failed", request=request) from exc

    with (
        _api(tmp_path, monkeypatch, untrusted) as api,
        pytest.raises(ecrcopy.RegistryUnavailable, match="certificate verify failed"),
    ):
        api.repositories()
    assert attempts == [1]


def test_an_answer_that_cannot_be_decoded_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def garbled(request: httpx.Request) -> httpx.Response:
        raise httpx.DecodingError("invalid gzip", request=request)

    with (
        _api(tmp_path, monkeypatch, garbled) as api,
        pytest.raises(ecrcopy.RegistryUnavailable, match="DecodingError"),
    ):
        api.repositories()


@pytest.mark.parametrize("endpoint", ["https://api.example:abc", "ftp://api.example", "https://", "not a url"])
def test_an_unusable_endpoint_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    with pytest.raises(ecrcopy.ConfigurationError, match="invalid ECR API endpoint"):
        _api(tmp_path, monkeypatch, lambda r: httpx.Response(200), endpoint_url=endpoint)


def test_one_tls_context_for_every_client() -> None:
    from ecrcopy._client import tls_context

    assert tls_context() is tls_context()


def test_the_api_client_loads_no_certificates_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a CA bundle in AWS's configuration the ECR API shares the run's TLS context (loading
    CA certificates costs ~50 ms each time), for an http endpoint too."""
    import ssl

    from ecrcopy._client import tls_context

    tls_context()

    def refuse(*args: object, **kwargs: object) -> ssl.SSLContext:
        raise AssertionError("a TLS context of its own")

    _use_only(monkeypatch, _env(tmp_path))
    monkeypatch.setattr(ssl, "create_default_context", refuse)
    for endpoint in ("http://127.0.0.1:1", "https://api.ecr.eu-west-1.amazonaws.com"):
        EcrApi(ecrcopy.EcrSource(region="eu-west-1", endpoint_url=endpoint)).close()
