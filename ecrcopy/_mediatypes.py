"""Media types of manifests and layers, and the Accept header sent for manifests."""

from __future__ import annotations

__all__ = [
    "ACCEPT_MANIFESTS",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V2",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "FOREIGN_LAYER_TYPES",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "SCHEMA1_TYPES",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST_V2})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_MANIFEST_TYPES | SCHEMA1_TYPES

DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
FOREIGN_LAYER_TYPES = frozenset(
    {
        DOCKER_FOREIGN_LAYER,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

#: Every manifest type, so that no registry converts a manifest fetched by tag.
ACCEPT_MANIFESTS = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1]
)
