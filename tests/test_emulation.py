"""Tests for the ECR and GitLab emulators (ecrcopy.testing.EcrEmulator / GitLabEmulator), with plain boto3 + httpx."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from ecrcopy.testing import (
    ACCEPT_MANIFESTS,
    OCI_INDEX,
    OCI_MANIFEST,
    S3_AUTH_CONFLICT,
    EcrEmulator,
    GitLabEmulator,
    PushError,
    docker_image,
    docker_manifest_list,
    fetch_blob,
    fetch_manifest,
    jwt_claims_unverified,
    list_tags,
    oci_artifact,
    oci_image,
    oci_index,
    push,
)

ECR_CHALLENGE = 'Basic realm="https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/",service="ecr.amazonaws.com"'

pytestmark = pytest.mark.usefixtures("no_leaked_threads")


@pytest.fixture
def ecr(tmp_path: Path) -> Iterator[EcrEmulator]:
    with EcrEmulator(tmp_path / "ecr") as emulator:
        yield emulator


def _basic(ecr: EcrEmulator) -> tuple[str, str]:
    data = ecr.boto3_client().get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return user, password


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def _all_images(client: Any, repo: str, **kwargs: Any) -> list[dict[str, Any]]:
    pages = client.get_paginator("describe_images").paginate(repositoryName=repo, **kwargs)
    return [detail for page in pages for detail in page["imageDetails"]]


# -- ECR: authentication ---------------------------------------------------------------------------


def test_authorization_token_opens_the_data_plane(ecr: EcrEmulator) -> None:
    image = oci_image([2048], seed=11)
    ecr.add_image("team/app", image, ["v1"])
    client = ecr.boto3_client()
    before = time.time()
    data = client.get_authorization_token()["authorizationData"][0]
    assert data["proxyEndpoint"] == ecr.data_url
    assert abs(data["expiresAt"].timestamp() - (before + 43200)) < 60
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS"
    # a fresh password every call
    assert _basic(ecr)[1] != password

    with httpx.Client() as http:
        anonymous = http.get(f"{ecr.data_url}/v2/")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == ECR_CHALLENGE
        assert anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
        wrong = http.get(f"{ecr.data_url}/v2/", auth=("AWS", "not-a-password"))
        assert wrong.status_code == 401
        assert http.get(f"{ecr.data_url}/v2/", auth=("AWS", password)).status_code == 200
    assert ecr.rejected_auth == 2
    raw, media_type, digest = fetch_manifest(ecr.data_url, "team/app", "v1", auth=(user, password))
    assert (raw, media_type, digest) == (image.raw, OCI_MANIFEST, image.digest)
    assert ecr.registry_host == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert ecr.data_host == ecr.data_url.removeprefix("http://")


def test_expired_password_gets_ecr_basic_challenge(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr", token_lifetime=1.0) as ecr:
        user, password = _basic(ecr)
        with httpx.Client(auth=(user, password)) as http:
            assert http.get(f"{ecr.data_url}/v2/").status_code == 200
            time.sleep(1.2)
            expired = http.get(f"{ecr.data_url}/v2/")
        assert expired.status_code == 401
        assert expired.headers["WWW-Authenticate"] == ECR_CHALLENGE
        assert expired.json()["errors"][0]["code"] == "DENIED"
        assert ecr.rejected_auth == 1


def test_expire_passwords_helper(ecr: EcrEmulator) -> None:
    user, password = _basic(ecr)
    ecr.expire_passwords()
    assert httpx.get(f"{ecr.data_url}/v2/", auth=(user, password)).status_code == 401


def test_wrong_credentials_are_refused_like_aws(ecr: EcrEmulator) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        ecr.boto3_client(access_key_id="AKIDWRONG").describe_repositories()
    assert _error_code(info.value) == "UnrecognizedClientException"
    assert info.value.response["Error"]["Message"] == "The security token included in the request is invalid."
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    with pytest.raises(botocore.exceptions.ClientError) as info:
        ecr.boto3_client(region="us-east-1").get_authorization_token()
    assert _error_code(info.value) == "InvalidSignatureException"
    assert "scoped to a valid region" in info.value.response["Error"]["Message"]

    import boto3

    bad_secret = boto3.session.Session(
        aws_access_key_id=ecr.access_key_id, aws_secret_access_key="wrong", region_name=ecr.region
    ).client("ecr", endpoint_url=ecr.api_url)
    try:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            bad_secret.describe_repositories()
        assert _error_code(info.value) == "InvalidSignatureException"
        assert "signature we calculated does not match" in info.value.response["Error"]["Message"]
    finally:
        bad_secret.close()
    assert ecr.issued_passwords == {}


# -- ECR: listing ------------------------------------------------------------------------------------


def test_describe_images_paginates_like_ecr(ecr: EcrEmulator) -> None:
    digests = [ecr.add_image("paged", oci_image([100 + i], seed=100 + i), [f"t{i}"]) for i in range(5)]
    client = ecr.boto3_client()
    ecr.reset_calls()
    pages = list(
        client.get_paginator("describe_images").paginate(repositoryName="paged", PaginationConfig={"PageSize": 2})
    )
    assert [len(page["imageDetails"]) for page in pages] == [2, 2, 1]
    assert [d["imageDigest"] for page in pages for d in page["imageDetails"]] == digests
    assert "nextToken" not in pages[-1]
    assert ecr.calls == ["DescribeImages"] * 3

    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.describe_images(repositoryName="paged", maxResults=1001)
    assert _error_code(info.value) == "InvalidParameterException"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.describe_images(repositoryName="paged", nextToken="garbage")
    assert _error_code(info.value) == "InvalidParameterException"
    # without maxResults: one page of up to 100
    assert len(client.describe_images(repositoryName="paged")["imageDetails"]) == 5
    assert len(client.describe_images(repositoryName="paged", maxResults=1000)["imageDetails"]) == 5

    # ListImages and DescribeRepositories page too
    listed = list(
        client.get_paginator("list_images").paginate(repositoryName="paged", PaginationConfig={"PageSize": 3})
    )
    assert [len(page["imageIds"]) for page in listed] == [3, 2]
    for name in ("more-a", "more-b"):
        ecr.create_repository(name)
    repo_pages = list(client.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(page["repositories"]) for page in repo_pages] == [2, 1]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.describe_repositories(maxResults=1001)
    assert _error_code(info.value) == "InvalidParameterException"
    # errors from moto pass through
    with pytest.raises(client.exceptions.RepositoryNotFoundException):
        client.describe_images(repositoryName="missing")


def test_tag_status_filter_and_index_children(ecr: EcrEmulator) -> None:
    amd = oci_image([300], seed=21, platform="linux/amd64")
    arm = oci_image([5000], seed=22, platform="linux/arm64")
    index = oci_index([amd, arm])
    ecr.add_image("multi", index, ["latest"])
    ecr.add_image("multi", oci_image([10], seed=23))  # untagged on purpose
    client = ecr.boto3_client()

    everything = {d["imageDigest"]: d for d in _all_images(client, "multi")}
    assert set(everything) == {index.digest, amd.digest, arm.digest, oci_image([10], seed=23).digest}
    assert everything[index.digest]["imageTags"] == ["latest"]
    assert everything[index.digest]["imageManifestMediaType"] == OCI_INDEX
    for child in (amd, arm):
        assert "imageTags" not in everything[child.digest]
        assert everything[child.digest]["imageManifestMediaType"] == OCI_MANIFEST

    tagged = _all_images(client, "multi", filter={"tagStatus": "TAGGED"})
    assert [d["imageDigest"] for d in tagged] == [index.digest]
    untagged = {d["imageDigest"] for d in _all_images(client, "multi", filter={"tagStatus": "UNTAGGED"})}
    assert untagged == set(everything) - {index.digest}
    assert len(_all_images(client, "multi", filter={"tagStatus": "ANY"})) == 4

    # children are really in the data plane, pullable by digest
    basic = _basic(ecr)
    assert fetch_manifest(ecr.data_url, "multi", arm.digest, auth=basic)[2] == arm.digest
    assert fetch_manifest(ecr.data_url, "multi", "latest", auth=basic)[0] == index.raw


def test_image_size_media_types_and_referrers(ecr: EcrEmulator) -> None:
    image = docker_image([1000, 2000], seed=31)
    small = docker_image([100], seed=32, platform="linux/arm64")
    manifest_list = docker_manifest_list([image, small])
    ecr.add_image("sizes", manifest_list, ["ml"])
    signature = oci_artifact(image, artifact_type="application/vnd.example.sig.v1")
    ecr.add_image("sizes", signature)
    details = {d["imageDigest"]: d for d in _all_images(ecr.boto3_client(), "sizes")}

    image_size = image.config.size + 1000 + 2000
    assert details[image.digest]["imageSizeInBytes"] == image_size
    assert details[small.digest]["imageSizeInBytes"] == small.config.size + 100
    assert details[manifest_list.digest]["imageSizeInBytes"] == image_size  # the largest child
    assert details[image.digest]["artifactMediaType"] == "application/vnd.docker.container.image.v1+json"
    assert details[signature.digest]["artifactMediaType"] == "application/vnd.example.sig.v1"
    assert details[signature.digest]["subjectManifestDigest"] == image.digest
    # by imageIds too
    one = ecr.boto3_client().describe_images(repositoryName="sizes", imageIds=[{"imageTag": "ml"}])["imageDetails"]
    assert [d["imageSizeInBytes"] for d in one] == [image_size]


def test_pushed_at_and_retagging(ecr: EcrEmulator) -> None:
    old = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    first = ecr.add_image("dated", oci_image([10], seed=41), ["stable"], pushed_at=old)
    second = ecr.add_image("dated", oci_image([10], seed=42), ["a"])
    third = ecr.add_image("dated", oci_image([10], seed=43), ["b"])
    details = {d["imageDigest"]: d for d in _all_images(ecr.boto3_client(), "dated")}
    assert details[first]["imagePushedAt"] == old
    assert details[second]["imagePushedAt"] < details[third]["imagePushedAt"]  # strictly increasing by default
    assert datetime.now(UTC) - details[third]["imagePushedAt"] < timedelta(minutes=1)

    ecr.set_pushed_at("dated", third, old - timedelta(days=1))
    newest = max(_all_images(ecr.boto3_client(), "dated"), key=lambda d: d["imagePushedAt"])
    assert newest["imageDigest"] == second

    # moving a tag leaves the old image untagged (ECR), not deleted (moto)
    ecr.add_image("dated", oci_image([10], seed=44), ["stable"])
    details = {d["imageDigest"]: d for d in _all_images(ecr.boto3_client(), "dated")}
    assert len(details) == 4
    assert "imageTags" not in details[first]


def test_tags_invalid_for_oci_are_registered_in_moto_only(ecr: EcrEmulator) -> None:
    image = oci_image([10], seed=51)
    long_tag = "x" * 200
    odd_tag = "release/1.0+build"
    ecr.add_image("odd", image, ["ok", long_tag, odd_tag])
    details = _all_images(ecr.boto3_client(), "odd")
    assert sorted(details[0]["imageTags"]) == sorted(["ok", long_tag, odd_tag])
    assert list_tags(ecr.data_url, "odd", auth=_basic(ecr)) == ["ok"]

    only_odd = oci_image([10], seed=52)
    ecr.add_image("odd", only_odd, [odd_tag + "2"])  # no valid tag: pushed by digest
    assert fetch_manifest(ecr.data_url, "odd", only_odd.digest, auth=_basic(ecr))[2] == only_odd.digest


def test_calls_are_recorded(ecr: EcrEmulator) -> None:
    ecr.add_image("recorded", oci_image([10], seed=61), ["v1"])
    assert ecr.calls == []  # seeding is not recorded
    client = ecr.boto3_client()
    client.get_authorization_token()
    client.describe_repositories()
    client.batch_get_image(repositoryName="recorded", imageIds=[{"imageTag": "v1"}])
    assert ecr.calls == ["GetAuthorizationToken", "DescribeRepositories", "BatchGetImage"]
    ecr.reset_calls()
    assert ecr.calls == []


def test_batch_get_image_returns_exact_manifest(ecr: EcrEmulator) -> None:
    image = oci_image([10], seed=62)
    ecr.add_image("exact", image, ["v1"])
    got = ecr.boto3_client().batch_get_image(
        repositoryName="exact", imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[OCI_MANIFEST]
    )["images"][0]
    assert got["imageManifest"].encode() == image.raw
    assert got["imageId"]["imageDigest"] == image.digest


# -- ECR: data plane ---------------------------------------------------------------------------------


def test_blob_get_redirects_to_the_blob_server(ecr: EcrEmulator) -> None:
    image = oci_image([4096], seed=71)
    ecr.add_image("blobs", image, ["v1"])
    layer = image.layers[0]
    user, password = _basic(ecr)
    url = f"{ecr.data_url}/v2/blobs/blobs/{layer.digest}"  # repository "blobs"
    with httpx.Client() as http:
        assert http.get(url).status_code == 401
        redirect = http.get(url, auth=(user, password))
        assert redirect.status_code == 307
        location = redirect.headers["Location"]
        assert location.startswith(ecr.blob_server.url + "/")
        assert not location.startswith(ecr.data_url)
        # S3 refuses the registry's credentials ...
        with_auth = http.get(location, auth=(user, password))
        assert with_auth.status_code == 400
        assert with_auth.content == S3_AUTH_CONFLICT
        # ... and serves the bytes without them
        plain = http.get(location)
        assert plain.status_code == 200
        assert hashlib.sha256(plain.content).hexdigest() == layer.digest.removeprefix("sha256:")
    assert ecr.blob_server.rejected_auth == 1
    assert fetch_blob(ecr.data_url, "blobs", layer.digest, auth=(user, password)) == layer.read()


def test_catalog_and_tag_list_limits(ecr: EcrEmulator) -> None:
    ecr.add_image("limits", oci_image([10], seed=81), ["a", "b"])
    with httpx.Client(auth=_basic(ecr)) as http:
        assert http.get(f"{ecr.data_url}/v2/_catalog", params={"n": 1001}).status_code == 400
        assert http.get(f"{ecr.data_url}/v2/limits/tags/list", params={"n": 1001}).status_code == 400
        assert http.get(f"{ecr.data_url}/v2/limits/tags/list", params={"n": 1000}).json()["tags"] in (
            ["a", "b"],
            ["b", "a"],
        )
        assert http.get(f"{ecr.data_url}/v2/_catalog", params={"n": 10}).json()["repositories"] == ["limits"]


def test_push_through_the_gate_and_access_log(ecr: EcrEmulator) -> None:
    image = oci_image([10], seed=91)
    basic = _basic(ecr)
    push(ecr.data_url, "pushed", image, "v1", auth=basic)  # ECR accepts pushes with the token too
    assert fetch_manifest(ecr.data_url, "pushed", "v1", auth=basic)[2] == image.digest
    assert any(r.method == "PUT" for r in ecr.data_registry.manifest_puts())
    head = httpx.head(f"{ecr.data_url}/v2/pushed/blobs/{image.layers[0].digest}", auth=basic)
    assert head.status_code == 307
    assert [r.status for r in ecr.data_proxy.requests][-1] == 307


def test_referrers_api_lists_images_with_that_subject(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr", referrers_page_size=2) as ecr:
        image = oci_image([10], seed=95)
        ecr.add_image("signed", image, ["v1"])
        sigs = [
            oci_artifact(
                image,
                artifact_type="application/vnd.cncf.notary.signature",
                payload=b"s%d" % i,
                annotations={"n": str(i)},
            )
            for i in range(3)
        ]
        sbom = oci_artifact(image, artifact_type="application/spdx+json", payload=b"sbom")
        sbom_sig = oci_artifact(sbom, artifact_type="application/vnd.cncf.notary.signature", payload=b"ss")
        for referrer in (*sigs, sbom, sbom_sig):
            ecr.add_image("signed", referrer)
        ecr.add_image("other", oci_artifact(image, payload=b"elsewhere"))  # another repository's referrer
        base = f"{ecr.data_url}/v2/signed/referrers"
        with httpx.Client(auth=_basic(ecr)) as http:
            assert http.get(f"{base}/{image.digest}").status_code == 200
            assert httpx.get(f"{base}/{image.digest}").status_code == 401  # behind the credential check

            listed: list[dict[str, Any]] = []
            url: str | None = f"{base}/{image.digest}"
            pages = 0
            while url is not None:
                reply = http.get(url)
                assert reply.status_code == 200
                assert reply.headers["content-type"] == OCI_INDEX
                body = reply.json()
                assert body["mediaType"] == OCI_INDEX and body["schemaVersion"] == 2
                assert len(body["manifests"]) <= 2
                listed += body["manifests"]
                pages += 1
                link = reply.headers.get("link")
                url = None if link is None else ecr.data_url + link.split(">")[0].lstrip("<")
            assert pages == 2
            expected = sorted([*sigs, sbom], key=lambda r: r.digest)
            assert [d["digest"] for d in listed] == [r.digest for r in expected]
            by_digest = {d["digest"]: d for d in listed}
            assert by_digest[sigs[1].digest] == {
                "mediaType": OCI_MANIFEST,
                "digest": sigs[1].digest,
                "size": len(sigs[1].raw),
                "artifactType": "application/vnd.cncf.notary.signature",
                "annotations": {"n": "1"},
            }
            # a referrer of a referrer is listed under its own subject only
            assert [d["digest"] for d in http.get(f"{base}/{sbom.digest}").json()["manifests"]] == [sbom_sig.digest]

            filtered = http.get(f"{base}/{image.digest}", params={"artifactType": "application/spdx+json"})
            assert filtered.headers["oci-filters-applied"] == "artifactType"
            assert [d["digest"] for d in filtered.json()["manifests"]] == [sbom.digest]
            assert "oci-filters-applied" not in http.get(f"{base}/{image.digest}").headers

            unknown = http.get(f"{base}/sha256:{'0' * 64}")
            assert unknown.status_code == 200 and unknown.json()["manifests"] == []
            bad = http.get(f"{base}/sha256:nothex")
            assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
            missing_repo = http.get(f"{ecr.data_url}/v2/nowhere/referrers/{image.digest}")
            assert missing_repo.status_code == 404


def test_without_the_referrers_api_the_route_is_unknown(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr", referrers_api=False) as ecr:
        image = oci_image([10], seed=96)
        ecr.add_image("plain", image, ["v1"])
        ecr.add_image("plain", oci_artifact(image))
        reply = httpx.get(f"{ecr.data_url}/v2/plain/referrers/{image.digest}", auth=_basic(ecr))
        assert reply.status_code == 404


# -- ECR: bulk ---------------------------------------------------------------------------------------


def test_bulk_seeding_is_fast_and_fully_listed(ecr: EcrEmulator) -> None:
    started = time.monotonic()
    many = ecr.add_many(120, 1, prefix="repo")
    big = ecr.add_many(1, 1100, prefix="big")[0]
    seeding = time.monotonic() - started
    assert seeding < 3.0, seeding
    client = ecr.boto3_client()
    repos = [
        r["repositoryName"]
        for page in client.get_paginator("describe_repositories").paginate()
        for r in page["repositories"]
    ]
    assert sorted(repos) == sorted([*many, big])
    images = _all_images(client, big)
    assert len(images) == 1100
    assert len({d["imageDigest"] for d in images}) == 1100
    assert {t for d in images for t in d["imageTags"]} == {f"v{i}" for i in range(1100)}
    assert ecr.calls.count("DescribeImages") == 11  # default page size 100
    assert images[0]["imageSizeInBytes"] == 512 + (1 << 20)

    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}).encode()
    digest = ecr.register_only("big-0000", raw, ["extra"])
    assert digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert len(_all_images(client, big)) == 1101


# -- GitLab ------------------------------------------------------------------------------------------


def test_gitlab_push_pull_and_env(tmp_path: Path) -> None:
    with GitLabEmulator(tmp_path / "gl", password="glpat-test") as gitlab:
        env = gitlab.env()
        assert env == {
            "CI_REGISTRY": gitlab.registry_host,
            "CI_REGISTRY_IMAGE": f"{gitlab.registry_host}/group/project",
            "CI_REGISTRY_USER": "gitlab-ci-token",
            "CI_REGISTRY_PASSWORD": "glpat-test",
        }
        assert gitlab.gate is not None and gitlab.registry_host == gitlab.gate.host
        creds = (env["CI_REGISTRY_USER"], env["CI_REGISTRY_PASSWORD"])
        index = oci_index([oci_image([100], seed=1), oci_image([100], seed=2, platform="linux/arm64")])
        for name in ("group/project", "group/project/app", "group/project/app/sub"):
            push(gitlab.registry_url, name, index, "v1", auth=creds)
            raw, media_type, _digest = fetch_manifest(gitlab.registry_url, name, "v1", auth=creds)
            assert (raw, media_type) == (index.raw, OCI_INDEX)
        with pytest.raises(PushError):
            push(gitlab.registry_url, "group/project", index, "v2", auth=("gitlab-ci-token", "wrong"))
        assert any(not r.ok for r in gitlab.tokens.requests)
        assert gitlab.registry.manifest_puts()


def test_gitlab_path_depth_rule(tmp_path: Path) -> None:
    with GitLabEmulator(tmp_path / "gl") as gitlab:
        creds = gitlab.credentials
        image = oci_image([10], seed=3)
        for name in ("group/project/a/b/c", "group/other/app", "elsewhere"):
            with pytest.raises(PushError):
                push(gitlab.registry_url, name, image, "v1", auth=creds)
        # the token for a too-deep name carries no access; the registry answers insufficient_scope
        token_reply = httpx.get(
            gitlab.tokens.realm,
            params={"service": "container_registry", "scope": "repository:group/project/a/b/c:pull,push"},
            auth=creds,
        )
        token = token_reply.json()["token"]
        claims = jwt_claims_unverified(token)
        assert claims is not None and claims["access"] == []
        upload = httpx.post(
            f"{gitlab.registry_url}/v2/group/project/a/b/c/blobs/uploads/", headers={"Authorization": f"Bearer {token}"}
        )
        assert upload.status_code == 401
        assert 'error="insufficient_scope"' in upload.headers["WWW-Authenticate"]
        assert gitlab.allowed_actions("gitlab-ci-token", "group/project/a/b") == {"pull", "push", "delete"}
        assert gitlab.allowed_actions("gitlab-ci-token", "group/projectx") == set()
        assert not gitlab.registry.manifest_puts()


def test_gitlab_hard_token_expiry(tmp_path: Path) -> None:
    with GitLabEmulator(tmp_path / "gl", token_lifetime=1.0) as gitlab:
        push(gitlab.registry_url, "group/project", oci_image([10], seed=4), "v1", auth=gitlab.credentials)
        token = httpx.get(
            gitlab.tokens.realm,
            params={"service": "container_registry", "scope": "repository:group/project:pull"},
            auth=gitlab.credentials,
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT_MANIFESTS}
        url = f"{gitlab.registry_url}/v2/group/project/manifests/v1"
        assert httpx.get(url, headers=headers).status_code == 200
        time.sleep(2.1)  # exp is rounded up to a whole second
        expired = httpx.get(url, headers=headers)
        assert expired.status_code == 401
        assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]


def test_two_emulators_need_distinct_accounts(tmp_path: Path) -> None:
    with (
        EcrEmulator(tmp_path / "one") as one,
        EcrEmulator(tmp_path / "two", account_id="210987654321", region="us-east-2") as two,
    ):
        one.create_repository("only-in-one")
        two.add_many(1, 2, prefix="only-in-two")
        names_one = [r["repositoryName"] for r in one.boto3_client().describe_repositories()["repositories"]]
        names_two = [r["repositoryName"] for r in two.boto3_client().describe_repositories()["repositories"]]
        assert names_one == ["only-in-one"]
        assert names_two == ["only-in-two-0000"]
        assert two.registry_host == "210987654321.dkr.ecr.us-east-2.amazonaws.com"
        assert two.env()["AWS_ENDPOINT_URL_ECR"] == two.api_url
        with pytest.raises(RuntimeError, match="another EcrEmulator"):
            EcrEmulator(tmp_path / "three").start()
    # state is reset on stop: a new emulator starts empty
    with EcrEmulator(tmp_path / "again") as again:
        assert again.boto3_client().describe_repositories()["repositories"] == []
