"""Where the ECR API is and who signs for it: region, endpoint and AWS credentials.

Two ways, one answer:

* **From the environment** (the usual GitLab CI job): ``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY`` (with ``AWS_SESSION_TOKEN`` for temporary keys), the region from
  ``--region``/``AWS_DEFAULT_REGION``/``AWS_REGION``, no profile and no shared config file, no FIPS or
  dual-stack endpoint asked for. Then nothing of botocore is imported: the endpoint is
  ``https://api.ecr.<region>.<partition's DNS suffix>`` (or ``--endpoint-url``,
  ``AWS_ENDPOINT_URL_ECR``, ``AWS_ENDPOINT_URL``), exactly what botocore resolves (a test compares
  every known region), and the region is checked against the partitions botocore ships.
* **Through botocore** for everything else (a profile, SSO, web identity, container or instance
  roles, ``credential_process``, endpoints or CA bundles in the config file, FIPS, dual-stack):
  botocore's own session resolves the region, credentials (refreshed as botocore refreshes them)
  and endpoint, so those behave exactly as with the AWS CLI.

Either way the requests themselves are made by :class:`~ecrcopy._ecr.EcrApi`, signed by
:func:`~ecrcopy._sigv4.sign`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from ._exceptions import AuthenticationError, ConfigurationError
from ._protocol import clean_text

__all__ = ["AwsKeys", "AwsTarget", "KeySource", "default_endpoint", "dns_suffix", "partitions", "resolve_target"]

_TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class AwsKeys:
    """One set of AWS keys; the secret parts never show in ``repr`` or ``str``."""

    access_key: str
    secret_key: SecretStr
    session_token: SecretStr | None = None


class KeySource(Protocol):
    def keys(self) -> AwsKeys:
        """The keys to sign the next request with (blocking: may refresh them)."""
        ...


@dataclass(frozen=True)
class StaticKeys:
    """Keys from the environment, as botocore's environment provider reads them."""

    value: AwsKeys

    def keys(self) -> AwsKeys:
        return self.value


class BotocoreKeys:
    """Keys from botocore's credential chain, refreshed when botocore says so."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def keys(self) -> AwsKeys:
        import botocore.exceptions

        if self._credentials is None:
            raise AuthenticationError(
                "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role"
            )
        try:
            frozen = self._credentials.get_frozen_credentials()
        except botocore.exceptions.ClientError as exc:  # STS refused AssumeRole / AssumeRoleWithWebIdentity
            error = exc.response.get("Error", {})
            code, message = clean_text(str(error.get("Code", "error")), 100), clean_text(str(error.get("Message", "")))
            raise AuthenticationError(f"cannot get AWS credentials: {code}: {message}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise AuthenticationError(f"cannot get AWS credentials: {exc}") from None
        token = frozen.token
        return AwsKeys(frozen.access_key, SecretStr(frozen.secret_key), SecretStr(token) if token else None)

    def __repr__(self) -> str:
        return "BotocoreKeys()"


@dataclass(frozen=True)
class AwsTarget:
    """The ECR API of one region: its endpoint, the keys to sign with, the CA bundle to trust."""

    region: str
    endpoint: str
    keys: KeySource
    ca_bundle: str | None = None
    #: ``"environment"`` or ``"botocore"``: which way it was resolved
    resolved_by: str = "environment"


@functools.cache
def partitions() -> tuple[dict[str, Any], ...]:
    """botocore's ``data/partitions.json`` (region names, region patterns, DNS suffixes), read
    without importing botocore."""
    spec = importlib.util.find_spec("botocore")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        path = Path(location) / "data" / "partitions.json"
        if path.is_file():
            return tuple(json.loads(path.read_text(encoding="utf-8"))["partitions"])
    return ()


def _partition(region: str) -> dict[str, Any] | None:
    """The partition that lists ``region``, else the one whose pattern it matches (a region newer
    than this botocore), else ``None``."""
    known = partitions()
    for partition in known:
        if region in partition.get("regions", {}):
            return partition
    for partition in known:
        if re.fullmatch(partition.get("regionRegex", r"(?!)"), region):
            return partition
    return None


def check_region(region: str) -> None:
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", region) or (partitions() and _partition(region) is None):
        raise ConfigurationError(f"unknown AWS region {region!r} (ECR is not offered there)")


def dns_suffix(region: str) -> str:
    """The DNS suffix of ``region``'s partition (``amazonaws.com``, ``amazonaws.com.cn``, ...)."""
    partition = _partition(region)
    return str(partition["outputs"]["dnsSuffix"]) if partition else "amazonaws.com"


def default_endpoint(region: str) -> str:
    """``https://api.ecr.<region>.<DNS suffix>``: the ECR API's regional endpoint."""
    return f"https://api.ecr.{region}.{dns_suffix(region)}"


def _configured_endpoint(env: Mapping[str, str]) -> str | None:
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() in _TRUE:
        return None
    return env.get("AWS_ENDPOINT_URL_ECR") or env.get("AWS_ENDPOINT_URL") or None


def _config_file(env: Mapping[str, str]) -> Path:
    # os.path.expanduser as botocore: no error without HOME or a passwd entry (arbitrary-UID containers)
    return Path(os.path.expanduser(env.get("AWS_CONFIG_FILE") or os.path.join("~", ".aws", "config")))


def _environment_only(profile: str | None, region: str | None, env: Mapping[str, str]) -> bool:
    """Whether the environment settles everything, as botocore would settle it."""
    if profile or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or not region:
        return False
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        return False
    if any(env.get(v, "").lower() in _TRUE for v in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT")):
        return False
    return not _config_file(env).exists()


def resolve_target(
    *,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> AwsTarget:
    """The ECR API to call and how to sign for it (blocking: botocore may read files or ask a role)."""
    env = os.environ if environ is None else environ
    if _environment_only(profile, region, env):
        assert region is not None
        check_region(region)
        token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN")
        keys = AwsKeys(
            env["AWS_ACCESS_KEY_ID"], SecretStr(env["AWS_SECRET_ACCESS_KEY"]), SecretStr(token) if token else None
        )
        return AwsTarget(
            region,
            (endpoint_url or _configured_endpoint(env) or default_endpoint(region)).rstrip("/"),
            StaticKeys(keys),
            env.get("AWS_CA_BUNDLE") or None,
        )
    return _through_botocore(region=region, profile=profile, endpoint_url=endpoint_url)


def _through_botocore(*, region: str | None, profile: str | None, endpoint_url: str | None) -> AwsTarget:
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session(profile=profile)
        region = region or session.get_config_variable("region")
        if not region:
            raise ConfigurationError("no AWS region: set AWS_DEFAULT_REGION (or --region)")
        check_region(region)
        credentials = session.get_credentials()
        # the client is made only to learn the endpoint botocore would call (config file, FIPS,
        # dual-stack); it never sends a request
        client = session.create_client(
            "ecr", region_name=region, endpoint_url=endpoint_url, aws_access_key_id="-", aws_secret_access_key="-"
        )
        endpoint = str(client.meta.endpoint_url)
        client.close()
        ca_bundle = session.get_config_variable("ca_bundle")
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigurationError(str(exc)) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigurationError(f"AWS configuration: {exc}") from None
    return AwsTarget(region, endpoint.rstrip("/"), BotocoreKeys(credentials), ca_bundle or None, "botocore")
