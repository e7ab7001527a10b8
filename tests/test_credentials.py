"""Credentials: Docker's config.json (auths, credHelpers, credsStore), USER:PASS parsing, secret hygiene."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from ecrcopy._credentials import (
    CredentialProvider,
    Credentials,
    DockerConfigCredentials,
    StaticCredentials,
    as_provider,
    parse_user_pass,
)
from ecrcopy._exceptions import AuthenticationError, ConfigurationError

SECRET = "cfg-Secret-4b8e21"
HELPER_SECRET = "helper-Secret-a1c9f0"
HOST = "registry.example.com"


def write_config(directory: Path, config: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


HELPER = """#!{python}
import json, os, sys
server = sys.stdin.read().strip()
log = os.environ.get("FAKE_HELPER_LOG")
if log:
    with open(log, "a") as f:
        f.write(" ".join(sys.argv[1:]) + " " + server + "\\n")
mode = os.environ.get("FAKE_HELPER_MODE", "ok")
if mode == "fail":
    sys.stderr.write("error talking to keychain for {secret}\\n")
    print("{secret}")
    sys.exit(3)
if mode == "garbage":
    print("not json {secret}")
    sys.exit(0)
if mode == "token":
    print(json.dumps({{"ServerURL": server, "Username": "<token>", "Secret": "{secret}"}}))
    sys.exit(0)
if server not in ("registry.example.com", "123.dkr.ecr.eu-west-1.amazonaws.com"):
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": "AWS", "Secret": "{secret}"}}))
"""


@pytest.fixture
def helper_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``docker-credential-fake`` on PATH; ``FAKE_HELPER_MODE`` picks its behaviour."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-fake"
    script.write_text(HELPER.format(python=sys.executable, secret=HELPER_SECRET))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_HELPER_LOG", str(tmp_path / "helper.log"))
    return bin_dir


def assert_no_secret(text: str) -> None:
    for secret in (SECRET, HELPER_SECRET, b64(f"alice:{SECRET}")):
        assert secret not in text


# ---------------------------------------------------------------------------------------------- auths


@pytest.mark.anyio
async def test_auths_base64_auth(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": b64(f"alice:{SECRET}")}}})
    provider = DockerConfigCredentials(path)
    creds = await provider.get(HOST)
    assert creds is not None
    assert creds.username == "alice" and creds.password.get_secret_value() == SECRET
    assert creds.identity_token is None
    assert creds.basic_header() == "Basic " + b64(f"alice:{SECRET}")
    assert await provider.get("other.example.com") is None


@pytest.mark.anyio
async def test_auths_password_with_colons(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": b64(f"alice:{SECRET}:with:colons")}}})
    creds = await DockerConfigCredentials(path).get(HOST)
    assert creds is not None and creds.password.get_secret_value() == f"{SECRET}:with:colons"


@pytest.mark.anyio
async def test_auths_username_password(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"username": "bob", "password": SECRET}}})
    creds = await DockerConfigCredentials(path).get(HOST)
    assert creds is not None and creds.username == "bob" and creds.password.get_secret_value() == SECRET


@pytest.mark.anyio
@pytest.mark.parametrize("key", [f"https://{HOST}", f"http://{HOST}", f"https://{HOST}/v2/", f"https://{HOST}/v1/"])
async def test_auths_url_keys(tmp_path: Path, key: str) -> None:
    path = write_config(tmp_path, {"auths": {key: {"auth": b64(f"alice:{SECRET}")}}})
    creds = await DockerConfigCredentials(path).get(HOST)
    assert creds is not None and creds.username == "alice"


@pytest.mark.anyio
async def test_auths_host_with_port(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {"auths": {"localhost:5000": {"auth": b64("a:1")}, "localhost:5001": {"auth": b64("b:2")}}},
    )
    provider = DockerConfigCredentials(path)
    first, second = await provider.get("localhost:5000"), await provider.get("localhost:5001")
    assert first is not None and first.username == "a"
    assert second is not None and second.username == "b"
    assert await provider.get("localhost") is None


@pytest.mark.anyio
async def test_docker_hub_legacy_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")}}})
    provider = DockerConfigCredentials(path)
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        creds = await provider.get(host)
        assert creds is not None and creds.username == "hubuser"


@pytest.mark.anyio
async def test_identity_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": b64("<token>:"), "identitytoken": SECRET}}})
    creds = await DockerConfigCredentials(path).get(HOST)
    assert creds is not None
    assert creds.identity_token is not None and creds.identity_token.get_secret_value() == SECRET
    assert_no_secret(repr(creds))


@pytest.mark.anyio
async def test_entry_without_user_is_skipped(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {}, f"https://{HOST}": {"auth": b64("carol:x")}}})
    creds = await DockerConfigCredentials(path).get(HOST)
    assert creds is not None and creds.username == "carol"


@pytest.mark.anyio
async def test_invalid_base64_auth_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": "%%%" + SECRET + "="}}})
    with pytest.raises(ConfigurationError) as info:
        await DockerConfigCredentials(path).get(HOST)
    assert HOST in str(info.value)
    assert_no_secret(str(info.value))


# ---------------------------------------------------------------------------------------------- file location


@pytest.mark.anyio
async def test_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "dockercfg", {"auths": {HOST: {"auth": b64(f"alice:{SECRET}")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    provider = DockerConfigCredentials()
    assert str(tmp_path / "dockercfg" / "config.json") in repr(provider)
    creds = await provider.get(HOST)
    assert creds is not None and creds.username == "alice"
    assert isinstance(as_provider(None), DockerConfigCredentials)


@pytest.mark.anyio
async def test_home_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    write_config(tmp_path / ".docker", {"auths": {HOST: {"username": "h", "password": "p"}}})
    creds = await DockerConfigCredentials().get(HOST)
    assert creds is not None and creds.username == "h"


@pytest.mark.anyio
async def test_missing_file_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await DockerConfigCredentials(tmp_path / "nope" / "config.json").get(HOST) is None
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "absent"))
    assert await DockerConfigCredentials().get(HOST) is None


@pytest.mark.anyio
@pytest.mark.parametrize("text", ['{"auths": {', "not json at all", '{"auths": {"h": {"auth": "' + SECRET])
async def test_malformed_json_is_a_configuration_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        await DockerConfigCredentials(path).get(HOST)
    assert str(path) in str(info.value)
    assert_no_secret(str(info.value))


@pytest.mark.anyio
@pytest.mark.parametrize("config", [[], "string", {"auths": []}, {"auths": {HOST: "x"}}, {"credHelpers": {HOST: 5}}])
async def test_odd_shapes_give_none(tmp_path: Path, config: object) -> None:
    assert await DockerConfigCredentials(write_config(tmp_path, config)).get(HOST) is None


@pytest.mark.anyio
async def test_cached_until_invalidated(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": b64("alice:old")}}})
    provider = DockerConfigCredentials(path)
    first = await provider.get(HOST)
    write_config(tmp_path, {"auths": {HOST: {"auth": b64("alice:new")}}})
    assert await provider.get(HOST) == first
    provider.invalidate(HOST)
    renewed = await provider.get(HOST)
    assert renewed is not None and renewed.password.get_secret_value() == "new"


# ---------------------------------------------------------------------------------------------- helpers


@pytest.mark.anyio
async def test_cred_helper(tmp_path: Path, helper_bin: Path) -> None:
    path = write_config(
        tmp_path,
        {"credHelpers": {HOST: "fake"}, "auths": {HOST: {"auth": b64("shadowed:by-helper")}}},
    )
    creds = await DockerConfigCredentials(path).get(HOST)
    assert creds is not None
    assert creds.username == "AWS" and creds.password.get_secret_value() == HELPER_SECRET
    assert (tmp_path / "helper.log").read_text().split() == ["get", HOST]


@pytest.mark.anyio
async def test_cred_helper_not_found_gives_none(tmp_path: Path, helper_bin: Path) -> None:
    path = write_config(tmp_path, {"credHelpers": {"unknown.example.com": "fake"}})
    assert await DockerConfigCredentials(path).get("unknown.example.com") is None


@pytest.mark.anyio
async def test_creds_store_is_the_default_helper(tmp_path: Path, helper_bin: Path) -> None:
    path = write_config(tmp_path, {"credsStore": "fake", "auths": {"other.example.com": {}}})
    provider = DockerConfigCredentials(path)
    creds = await provider.get("123.dkr.ecr.eu-west-1.amazonaws.com")
    assert creds is not None and creds.username == "AWS"
    assert await provider.get("elsewhere.example.com") is None


@pytest.mark.anyio
async def test_cred_helper_identity_token(tmp_path: Path, helper_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HELPER_MODE", "token")
    path = write_config(tmp_path, {"credHelpers": {HOST: "fake"}})
    creds = await DockerConfigCredentials(path).get(HOST)
    assert creds is not None and creds.identity_token is not None
    assert creds.identity_token.get_secret_value() == HELPER_SECRET


@pytest.mark.anyio
async def test_failing_helper_is_an_authentication_error_without_the_secret(
    tmp_path: Path, helper_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HELPER_MODE", "fail")
    path = write_config(tmp_path, {"credHelpers": {HOST: "fake"}})
    with pytest.raises(AuthenticationError) as info:
        await DockerConfigCredentials(path).get(HOST)
    assert "docker-credential-fake" in str(info.value) and "exit 3" in str(info.value)
    assert_no_secret(f"{info.value} {info.value!r}")


@pytest.mark.anyio
async def test_helper_garbage_is_an_authentication_error_without_the_secret(
    tmp_path: Path, helper_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HELPER_MODE", "garbage")
    path = write_config(tmp_path, {"credHelpers": {HOST: "fake"}})
    with pytest.raises(AuthenticationError) as info:
        await DockerConfigCredentials(path).get(HOST)
    assert_no_secret(f"{info.value} {info.value!r}")


@pytest.mark.anyio
async def test_helper_not_installed_is_a_configuration_error(tmp_path: Path, helper_bin: Path) -> None:
    path = write_config(tmp_path, {"credHelpers": {HOST: "absent-helper-xyz"}})
    with pytest.raises(ConfigurationError, match="docker-credential-absent-helper-xyz"):
        await DockerConfigCredentials(path).get(HOST)


@pytest.mark.anyio
async def test_helper_not_executable_is_an_ecrcopy_error(tmp_path: Path, helper_bin: Path) -> None:
    (helper_bin / "docker-credential-fake").chmod(0o644)
    path = write_config(tmp_path, {"credHelpers": {HOST: "fake"}})
    with pytest.raises((ConfigurationError, AuthenticationError), match="docker-credential-fake"):
        await DockerConfigCredentials(path).get(HOST)


# ---------------------------------------------------------------------------------------------- USER:PASS


@pytest.mark.parametrize(
    ("text", "user", "password"),
    [
        ("a:b", "a", "b"),
        ("a:b:c", "a", "b:c"),
        ("gitlab-ci-token:glcbt-64_abc=:", "gitlab-ci-token", "glcbt-64_abc=:"),
        ("user:", "user", ""),
        ("AWS:" + "x" * 2000, "AWS", "x" * 2000),
    ],
)
def test_parse_user_pass(text: str, user: str, password: str) -> None:
    creds = parse_user_pass(text)
    assert creds.username == user and creds.password.get_secret_value() == password
    if password:
        assert password not in repr(creds) and password not in str(creds)


@pytest.mark.parametrize("text", ["nocolon", "", ":password-only"])
def test_parse_user_pass_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError, match="USER:PASSWORD") as info:
        parse_user_pass(text, what="--dest-creds")
    assert "--dest-creds" in str(info.value)
    if text:
        assert text.lstrip(":") not in str(info.value)


# ---------------------------------------------------------------------------------------------- repr and providers


def test_reprs_hide_secrets(tmp_path: Path) -> None:
    creds = Credentials.of("alice", SECRET)
    token_creds = Credentials("<token>", Credentials.of("x", SECRET).password, Credentials.of("x", SECRET).password)
    texts = [
        repr(creds),
        str(creds),
        f"{creds}",
        repr(token_creds),
        repr(StaticCredentials(creds)),
        repr(StaticCredentials({HOST: creds})),
        repr(DockerConfigCredentials(tmp_path / "config.json")),
        repr([creds]),
        repr(creds.password),
    ]
    for text in texts:
        assert_no_secret(text)
    assert "alice" in repr(creds)
    assert HOST in repr(StaticCredentials({HOST: creds}))


@pytest.mark.anyio
async def test_static_credentials() -> None:
    one = Credentials.of("a", "1")
    other = Credentials.of("b", "2")
    assert await StaticCredentials(one).get("anything") == one
    mapped = StaticCredentials({HOST: other})
    assert await mapped.get(HOST) == other and await mapped.get("x") is None
    assert await StaticCredentials(None).get(HOST) is None
    mapped.invalidate(HOST)  # static: no-op
    assert await mapped.get(HOST) == other


@pytest.mark.anyio
async def test_as_provider() -> None:
    from_tuple = as_provider(("u", SECRET))
    assert isinstance(from_tuple, StaticCredentials) and isinstance(from_tuple, CredentialProvider)
    creds = await from_tuple.get(HOST)
    assert creds is not None and creds.password.get_secret_value() == SECRET
    assert isinstance(as_provider(Credentials.of("u", "p")), StaticCredentials)
    provider = StaticCredentials(None)
    assert as_provider(provider) is provider
    with pytest.raises(ConfigurationError, match="int"):
        as_provider(42)  # type: ignore[arg-type]
