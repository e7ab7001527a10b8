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
"""

from ._blobserver import S3_AUTH_CONFLICT, BlobServer
from ._ecr import EcrEmulator
from ._gitlab import GitLabEmulator
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
)
from ._proxy import Proxy, ProxyHook, ProxyRequest, ProxyResponse, jwt_claims_unverified
from ._registry import Registry, RegistryError, blob_data_path
from ._tokenserver import Grant, TokenRequest, TokenServer, parse_scope

__all__ = [
    "ACCEPT_MANIFESTS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
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
    "GitLabEmulator",
    "Grant",
    "Image",
    "Index",
    "LoggedRequest",
    "Proxy",
    "ProxyHook",
    "ProxyRequest",
    "ProxyResponse",
    "PushError",
    "Registry",
    "RegistryError",
    "TokenRequest",
    "TokenServer",
    "blob_data_path",
    "corrupt_blob",
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
]
