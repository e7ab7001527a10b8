"""Tests for the test rig itself (ecrcopy.testing): real registry processes, token service, proxy."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ecrcopy.testing import (
    ACCEPT_MANIFESTS,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    S3_AUTH_CONFLICT,
    Blob,
    BlobServer,
    Proxy,
    ProxyRequest,
    ProxyResponse,
    PushError,
    Registry,
    RegistryError,
    TokenServer,
    corrupt_blob,
    docker_image,
    docker_manifest_list,
    fetch_blob,
    fetch_manifest,
    free_port,
    list_tags,
    oci_artifact,
    oci_image,
    oci_index,
    parse_scope,
    push,
)

USERS = {"alice": "s3cret"}
CREDS = ("alice", "s3cret")

pytestmark = pytest.mark.usefixtures("no_leaked_threads")


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    with TokenServer(users=USERS) as server:
        yield server


@pytest.fixture
def gitlab(tmp_path: Path, tokens: TokenServer) -> Iterator[Registry]:
    with Registry(tmp_path / "gitlab", token_auth=tokens) as registry:
        yield registry


def _get(url: str, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(url, headers={"Accept": ACCEPT_MANIFESTS, **headers})


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535


def test_registry_htpasswd_push_and_request_log(tmp_path: Path) -> None:
    with Registry(tmp_path / "r", htpasswd=USERS) as registry:
        assert registry.url == f"http://{registry.host}"
        denied = httpx.get(f"{registry.url}/v2/")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Basic ")
        assert httpx.get(f"{registry.url}/v2/", auth=CREDS).status_code == 200

        image = docker_image([100, 2000], seed=1)
        assert push(registry.url, "team/app", image, "v1", auth=CREDS) == image.digest
        raw, media_type, digest = fetch_manifest(registry.url, "team/app", "v1", auth=CREDS)
        assert (raw, media_type, digest) == (image.raw, DOCKER_MANIFEST, image.digest)
        assert list_tags(registry.url, "team/app", auth=CREDS) == ["v1"]
        assert list_tags(registry.url, "team/missing", auth=CREDS) == []

        # Requests are visible right away (the access log is synchronised with a probe request).
        assert registry.blob_uploads() == 3
        assert [(r.method, r.path) for r in registry.manifest_puts()] == [("PUT", "/v2/team/app/manifests/v1")]
        writes = registry.writes()
        assert {r.method for r in writes} == {"POST", "PUT"}
        assert all("ecrcopy-testing-probe" not in r.query for r in registry.requests())
        uploads = [r for r in writes if r.method == "PUT" and "/blobs/uploads/" in r.path]
        assert all("_state=" in r.query and "digest=sha256:" in r.query for r in uploads)

        # Pushing again skips present blobs and re-puts only the manifest.
        registry.reset()
        push(registry.url, "team/app", image, "v1", auth=CREDS)
        assert registry.blob_uploads() == 0
        assert len(registry.manifest_puts()) == 1
        assert (registry.data_dir / "docker" / "registry" / "v2" / "blobs").is_dir()
    assert not registry.running


def test_registry_start_failure_reports_log(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no scheme specified"):
        Registry(tmp_path / "bad", redirect_blobs_to="").start()


def test_token_server_with_registry(tokens: TokenServer, gitlab: Registry) -> None:
    challenge = httpx.get(f"{gitlab.url}/v2/").headers["WWW-Authenticate"]
    assert challenge == f'Bearer realm="{tokens.realm}",service="container_registry"'

    image = oci_image([512, 4096], seed=2)
    push(gitlab.url, "group/project/app", image, "v1", auth=CREDS)
    raw, media_type, _ = fetch_manifest(gitlab.url, "group/project/app", "v1", auth=CREDS)
    assert raw == image.raw and media_type == OCI_MANIFEST
    assert tokens.requests[0].scopes == ["repository:group/project/app:pull,push"]
    assert all(r.ok and r.user == "alice" for r in tokens.requests)

    # A token for another repository is refused.
    url = f"{gitlab.url}/v2/group/project/app/manifests/v1"
    other = tokens.issue_token("alice", ["repository:group/other:pull"])
    refused = _get(url, other)
    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert _get(url, tokens.issue_token("alice", ["repository:group/project/app:pull"])).status_code == 200

    # Wrong and missing credentials get a JSON 401 from the realm.
    tokens.reset()
    assert httpx.get(tokens.realm, params={"scope": "repository:a:pull"}, auth=("alice", "bad")).status_code == 401
    anonymous = httpx.get(tokens.realm, params={"service": "container_registry"})
    assert anonymous.status_code == 401 and anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert [(r.user, r.ok) for r in tokens.requests] == [("alice", False), (None, False)]
    with pytest.raises(PushError, match="token request"):
        fetch_manifest(gitlab.url, "group/project/app", "v1", auth=("alice", "bad"))


def test_token_reply_and_claims(tokens: TokenServer) -> None:
    response = httpx.get(
        tokens.realm,
        params=[
            ("service", "container_registry"),
            ("scope", "repository:a/b:pull,push"),
            ("scope", "repository:localhost:5000/c:pull"),
        ],
        auth=CREDS,
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["token"]
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256" and len(header["x5c"]) == 1
    key = x509.load_pem_x509_certificate(tokens.cert_pem).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    claims = jwt.decode(body["token"], key, algorithms=["ES256"], audience="container_registry")
    now = time.time()
    assert claims["iss"] == "ecrcopy-test-issuer" and claims["sub"] == "alice"
    assert isinstance(claims["exp"], int) and isinstance(claims["nbf"], int)
    assert claims["nbf"] < now < claims["exp"] <= now + 301
    assert claims["access"] == [
        {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
        {"type": "repository", "name": "localhost:5000/c", "actions": ["pull"]},
    ]
    assert parse_scope("repository:host:5000/x/y:pull,push") == ("repository", "host:5000/x/y", ["pull", "push"])
    assert tokens.cert_path.read_bytes() == tokens.cert_pem


def test_token_grant_intersects(tmp_path: Path) -> None:
    def grant(user: str | None, name: str) -> set[str]:
        return {"pull", "push"} if name.startswith("mine/") else {"pull"}

    with TokenServer(users=USERS, grant=grant) as tokens, Registry(tmp_path / "g", token_auth=tokens) as registry:
        push(registry.url, "mine/app", oci_image([10], seed=3), "v1", auth=CREDS)
        with pytest.raises(PushError, match="401"):
            push(registry.url, "theirs/app", oci_image([10], seed=3), "v1", auth=CREDS)
        claims = jwt.decode(
            tokens.issue_token("alice", ["repository:theirs/app:pull,push"]), options={"verify_signature": False}
        )
        assert claims["access"] == [{"type": "repository", "name": "theirs/app", "actions": ["pull"]}]


def test_indexes_mounts_and_referrer(tokens: TokenServer, gitlab: Registry) -> None:
    base = Blob.generated(3000, seed=42)
    amd = oci_image([base, 100], seed=10, platform="linux/amd64")
    arm = oci_image([base, 200], seed=11, platform="linux/arm64/v8")
    index = oci_index([amd, arm])
    assert [m["platform"] for m in index.manifest["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    push(gitlab.url, "g/p/multi", index, "latest", auth=CREDS)
    assert fetch_manifest(gitlab.url, "g/p/multi", "latest", auth=CREDS) == (index.raw, OCI_INDEX, index.digest)
    assert fetch_manifest(gitlab.url, "g/p/multi", arm.digest, auth=CREDS)[0] == arm.raw

    listing = docker_manifest_list([docker_image([50], seed=12), docker_image([60], seed=13, platform="linux/arm64")])
    push(gitlab.url, "g/p/multi", listing, None, auth=CREDS)
    assert fetch_manifest(gitlab.url, "g/p/multi", listing.digest, auth=CREDS)[1] == DOCKER_MANIFEST_LIST

    signature = oci_artifact(amd)
    assert signature.manifest["subject"]["digest"] == amd.digest
    push(gitlab.url, "g/p/multi", signature, None, auth=CREDS)

    # A cross-repository mount answered 201 is counted by mounts(), not by blob_uploads().
    gitlab.reset()
    token = tokens.issue_token("alice", ["repository:g/p/other:pull,push", "repository:g/p/multi:pull"])
    mounted = httpx.post(
        f"{gitlab.url}/v2/g/p/other/blobs/uploads/",
        params={"mount": base.digest, "from": "g/p/multi"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert mounted.status_code == 201
    assert len(gitlab.mounts()) == 1 and gitlab.blob_uploads() == 0


def test_proxy_forwards_streams_and_counts(gitlab: Registry) -> None:
    with Proxy(gitlab.url) as proxy:
        image = oci_image([5 << 20, 10], seed=20)  # 5 MiB: a generated, streamed blob
        assert image.layers[0].data is None
        push(proxy.url, "g/p/app", image, "v1", auth=CREDS)
        assert fetch_blob(proxy.url, "g/p/app", image.layers[0].digest, auth=CREDS) == image.layers[0].read()
        statuses = [(r.method, r.status) for r in proxy.requests]
        assert ("PUT", 201) in statuses and ("HEAD", 404) in statuses
        assert gitlab.blob_uploads() == 3

        # Locations point at the proxy (Host is preserved); a chunked request body is forwarded.
        proxy.reset()
        auth = {"Authorization": f"Bearer {_token(gitlab, 'g/p/app')}"}
        with httpx.Client() as client:
            start = client.post(f"{proxy.url}/v2/g/p/app/blobs/uploads/", headers=auth)
            assert start.headers["Location"].startswith(f"{proxy.url}/v2/g/p/app/blobs/uploads/")
            data = b"chunked!" * 40000
            digest = "sha256:" + hashlib.sha256(data).hexdigest()

            def pieces() -> Iterator[bytes]:
                for offset in range(0, len(data), 70000):
                    yield data[offset : offset + 70000]

            done = client.put(
                start.headers["Location"] + "&digest=" + digest,
                content=pieces(),
                headers={**auth, "Content-Type": "application/octet-stream"},
            )
            assert done.request.headers["Transfer-Encoding"] == "chunked"
            assert done.status_code == 201
            head = client.head(f"{proxy.url}/v2/g/p/app/blobs/{digest}", headers=auth)
            assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
        assert [r.status for r in proxy.requests] == [202, 201, 200]


def _token(registry: Registry, repo: str) -> str:
    tokens = registry.token_auth
    assert tokens is not None
    return tokens.issue_token("alice", [f"repository:{repo}:pull,push"])


def test_proxy_token_gate_expires_tokens(tmp_path: Path) -> None:
    with (
        TokenServer(users=USERS, lifetime=1) as tokens,
        Registry(tmp_path / "g", token_auth=tokens) as registry,
        Proxy(registry.url, token_gate=True) as gate,
    ):
        push(gate.url, "g/p/app", oci_image([10], seed=30), "v1", auth=CREDS)
        token = tokens.issue_token("alice", ["repository:g/p/app:pull"])
        path = "/v2/g/p/app/manifests/v1"
        assert _get(gate.url + path, token).status_code == 200
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        time.sleep(max(0.0, exp - time.time()) + 0.05)
        expired = _get(gate.url + path, token)
        assert expired.status_code == 401
        assert expired.json() == {
            "errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}]
        }
        assert expired.headers["WWW-Authenticate"] == (
            f'Bearer realm="{tokens.realm}",service="container_registry",error="invalid_token"'
        )
        # distribution alone still honours it (60 s leeway): that is why the gate exists.
        assert _get(registry.url + path, token).status_code == 200
        assert gate.requests[-1].status == 401


def test_proxy_hook_injects_faults(tmp_path: Path) -> None:
    seen: list[ProxyRequest] = []

    def hook(request: ProxyRequest) -> ProxyResponse | None:
        seen.append(request)
        if request.method == "GET" and "/manifests/" in request.path:
            return ProxyResponse.error(429, "TOOMANYREQUESTS", "slow down", {"Retry-After": "1"})
        return None

    with Registry(tmp_path / "r") as registry, Proxy(registry.url, hook=hook) as proxy:
        push(proxy.url, "app", docker_image([10], seed=40), "v1")
        throttled = _get(f"{proxy.url}/v2/app/manifests/v1", Foo="bar")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
        assert throttled.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert seen[-1].headers["foo"] == "bar"
        proxy.hook = lambda request: ProxyResponse(500, {}, b"boom") if request.method == "PUT" else None
        with pytest.raises(PushError, match="500"):
            push(proxy.url, "app", docker_image([20], seed=41), "v2")
        proxy.hook = None
        assert _get(f"{proxy.url}/v2/app/manifests/v1").status_code == 200
        assert [r.status for r in proxy.requests if r.method == "GET" and "/manifests/" in r.path] == [429, 200]


def test_blob_server_behind_redirect(tmp_path: Path) -> None:
    workdir = tmp_path / "ecr"
    with (
        BlobServer(Registry.data_dir_for(workdir)) as blobs,
        Registry(workdir, htpasswd={"AWS": "pw"}, redirect_blobs_to=blobs.url + "/dropped/path") as ecr,
    ):
        image = oci_image([6000], seed=50)
        push(ecr.url, "ecr/app", image, "v1", auth=("AWS", "pw"))
        layer = image.layers[0]
        hexdigest = layer.digest.removeprefix("sha256:")
        expected = f"{blobs.url}/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
        with httpx.Client(auth=("AWS", "pw")) as client:
            redirect = client.get(f"{ecr.url}/v2/ecr/app/blobs/{layer.digest}")
            assert redirect.status_code == 307 and redirect.headers["Location"] == expected
            head = client.head(f"{ecr.url}/v2/ecr/app/blobs/{layer.digest}")
            assert head.status_code == 307 and head.headers["Location"] == expected

            conflict = client.get(expected)  # the client's Basic auth goes along: S3 refuses it
            assert conflict.status_code == 400 and conflict.content == S3_AUTH_CONFLICT
            followed = client.get(f"{ecr.url}/v2/ecr/app/blobs/{layer.digest}", follow_redirects=True)
            assert followed.status_code == 200 and followed.content == layer.data  # httpx drops auth cross-origin
        plain = httpx.get(expected)
        assert plain.content == layer.data
        ranged = httpx.get(expected, headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == layer.read()[10:20]
        assert ranged.headers["Content-Range"] == f"bytes 10-19/{layer.size}"
        assert httpx.get(expected, headers={"Range": "bytes=9000-"}).status_code == 416
        assert blobs.rejected_auth == 1
        assert [r.status for r in blobs.requests] == [400, 200, 200, 206, 416]


def test_relative_urls(tmp_path: Path) -> None:
    with Registry(tmp_path / "r", relative_urls=True) as registry:
        started = httpx.post(f"{registry.url}/v2/app/blobs/uploads/")
        assert started.status_code == 202
        location = started.headers["Location"]
        assert location.startswith("/v2/app/blobs/uploads/") and "?_state=" in location
        image = oci_image([100], seed=60)
        push(registry.url, "app", image, "v1")  # resolves relative Locations, keeps _state
        assert fetch_manifest(registry.url, "app", image.digest)[0] == image.raw


def test_corrupt_blob_is_served_unverified(tmp_path: Path) -> None:
    with Registry(tmp_path / "r") as registry:
        image = oci_image([2048], seed=70)
        push(registry.url, "app", image, "v1")
        layer = image.layers[0]
        path = corrupt_blob(registry, layer.digest)
        assert path == registry.blob_path(layer.digest) and path.stat().st_size == layer.size
        served = httpx.get(f"{registry.url}/v2/app/blobs/{layer.digest}")
        assert served.status_code == 200
        assert served.headers["Docker-Content-Digest"] == layer.digest
        assert len(served.content) == layer.size and served.content != layer.data
        assert "sha256:" + hashlib.sha256(served.content).hexdigest() != layer.digest


def test_generated_blobs_are_deterministic() -> None:
    big = Blob.generated((5 << 20) + 123, seed=7)
    assert big.data is None
    again = Blob.generated((5 << 20) + 123, seed=7)
    assert big.digest == again.digest
    assert b"".join(big.chunks(300_000)) == b"".join(again.chunks())
    assert Blob.generated(1000, seed=7).digest != Blob.generated(1000, seed=8).digest
    assert docker_image([10, 20], seed=1).digest == docker_image([10, 20], seed=1).digest
    assert docker_image([10, 20], seed=1).digest != docker_image([10, 20], seed=2).digest
    manifest = json.loads(oci_image([10]).raw)
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["layers"][0]["size"] == 10
