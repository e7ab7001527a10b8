"""Test support for ecrcopy: real registries, a token service, a proxy and image seeding helpers.

Everything binds to 127.0.0.1 on free ports and stops cleanly (no leaked threads, processes or
sockets). Needs the ``docker-registry`` binary (CNCF distribution 2.8) for :class:`Registry`, ``htpasswd``
(or the ``bcrypt`` module) for its htpasswd mode, and the ``test`` extras (``pyjwt``,
``cryptography``) for :class:`TokenServer`.

Typical set-ups::

    with TokenServer(users={"u": "p"}) as tokens, Registry(tmp / "gl", token_auth=tokens) as gitlab:
        push(gitlab.url, "group/project/app", oci_image([1024]), "v1", auth=("u", "p"))

    with BlobServer(Registry.data_dir_for(tmp / "ecr")) as s3, Registry(
        tmp / "ecr", htpasswd={"AWS": "pw"}, redirect_blobs_to=s3.url
    ) as ecr: ...

    with Proxy(gitlab.url, token_gate=True) as gate: ...  # GitLab-like hard token expiry

Faults and hostile servers::

    faults = FaultInjector(seed=1, rates={"503": 0.05, "cut": 0.03})  # a Proxy hook; see _faults
    with GitLabEmulator(tmp / "gl", registry_faults=faults) as gitlab: ...
    with EcrEmulator(tmp / "ecr", data_faults=faults) as ecr: ...  # data plane and S3 redirects

    with HostileRegistry(source) as hostile:  # forwards to `source` except for hostile repositories
        hostile.add("evil/app", Scenario.CYCLE)

    with StubServer() as foreign: ...  # a foreign origin recording every request's headers
"""

from ._blobserver import S3_AUTH_CONFLICT, BlobServer
from ._ecr import EcrEmulator
from ._faults import (
    FAULT_RATE_KEYS,
    Fault,
    FaultInjector,
    FaultKind,
    InjectedFault,
    any_request,
    data_requests,
    token_requests,
)
from ._gitlab import GitLabEmulator
from ._hostile import (
    DEEP_NESTING_LEVELS,
    FAKE_BEARER,
    HOSTILE_TEXT,
    HOSTILE_TEXT_LARGE,
    HUGE_TAG_COUNT,
    HostileRegistry,
    HostileRepository,
    Scenario,
)
from ._httpserver import LoggedRequest, free_port
from ._images import (
    ACCEPT_MANIFESTS,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Auth,
    Blob,
    Image,
    Index,
    PushError,
    corrupt_blob,
    docker_image,
    docker_manifest_list,
    fetch_blob,
    fetch_manifest,
    list_tags,
    oci_artifact,
    oci_image,
    oci_index,
    push,
    referrers_index,
)
from ._proxy import NO_RESPONSE, Proxy, ProxyHook, ProxyRequest, ProxyResponse, StubServer, jwt_claims_unverified
from ._registry import Registry, RegistryError, blob_data_path
from ._tokenserver import Grant, TokenRequest, TokenServer, parse_scope

__all__ = [
    "ACCEPT_MANIFESTS",
    "DEEP_NESTING_LEVELS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "FAKE_BEARER",
    "FAULT_RATE_KEYS",
    "HOSTILE_TEXT",
    "HOSTILE_TEXT_LARGE",
    "HUGE_TAG_COUNT",
    "NO_RESPONSE",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "S3_AUTH_CONFLICT",
    "Auth",
    "Blob",
    "BlobServer",
    "EcrEmulator",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "GitLabEmulator",
    "Grant",
    "HostileRegistry",
    "HostileRepository",
    "Image",
    "Index",
    "InjectedFault",
    "LoggedRequest",
    "Proxy",
    "ProxyHook",
    "ProxyRequest",
    "ProxyResponse",
    "PushError",
    "Registry",
    "RegistryError",
    "Scenario",
    "StubServer",
    "TokenRequest",
    "TokenServer",
    "any_request",
    "blob_data_path",
    "corrupt_blob",
    "data_requests",
    "docker_image",
    "docker_manifest_list",
    "fetch_blob",
    "fetch_manifest",
    "free_port",
    "jwt_claims_unverified",
    "list_tags",
    "oci_artifact",
    "oci_image",
    "oci_index",
    "parse_scope",
    "push",
    "referrers_index",
    "token_requests",
]
