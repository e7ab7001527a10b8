"""A peer reads what ecrcopy wrote: skopeo pulls every migrated image, referrer and fallback index.

After a migration from the ECR emulation into the GitLab-like destination (token auth, as GitLab), the
Debian ``skopeo`` -- a separate implementation of the distribution protocol and of token auth -- reads
each tag, each referrer by digest, cosign's tag and each ``sha256-<hex>`` fallback index: the bytes it
gets are the source's, and ``skopeo copy --all`` into an OCI layout and a ``dir:`` directory keeps
every digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ecrcopy import untagged_tag
from ecrcopy.testing import EcrEmulator, GitLabEmulator, oci_image, oci_index
from ecrcopy.testing._images import Image, Index
from tests.test_migrate_everything import fallback_entries, run, seed_signed
from tests.test_referrers import REFERRERS_OF, fallback

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (.ci/setup --test)")

REFERRERS = ("multi_sig", "amd_sig", "single_sig", "single_sbom", "sbom_sig")
TIMEOUT = 60


class Skopeo:
    """``skopeo`` with its own HOME, XDG directories, policy and registries configuration."""

    def __init__(self, tmp: Path, host: str, credentials: tuple[str, str]) -> None:
        self.host = host
        home = tmp / "skopeo-home"
        (home / ".config" / "containers").mkdir(parents=True)
        # credentials in an auth file, not on the command line (they would show in a failure message)
        self.authfile = home / "auth.json"
        token = base64.b64encode(":".join(credentials).encode()).decode()
        self.authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
        self.policy = home / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        registries = home / "registries.conf"
        registries.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "CONTAINERS_REGISTRIES_CONF": str(registries),
        }
        (home / "run").mkdir()

    def _run(self, *args: str) -> bytes:
        proc = subprocess.run(
            ["skopeo", "--policy", str(self.policy), *args],
            env=self.env,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert proc.returncode == 0, (args, proc.stderr.decode(errors="replace"))
        return proc.stdout

    def raw(self, repo: str, ref: str) -> bytes:
        sep = "@" if ref.startswith("sha256:") else ":"
        return self._run(
            "inspect", "--raw", "--tls-verify=false", "--authfile", str(self.authfile), self._ref(repo, ref, sep)
        )

    def tags(self, repo: str) -> set[str]:
        out = self._run(
            "list-tags", "--tls-verify=false", "--authfile", str(self.authfile), f"docker://{self.host}/{repo}"
        )
        return set(json.loads(out)["Tags"])

    def copy_all(self, repo: str, ref: str, destination: str) -> None:
        sep = "@" if ref.startswith("sha256:") else ":"
        self._run(
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--src-authfile",
            str(self.authfile),
            self._ref(repo, ref, sep),
            destination,
        )

    def _ref(self, repo: str, ref: str, sep: str) -> str:
        return f"docker://{self.host}/{repo}{sep}{ref}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blobs_of(obj: Image | Index) -> set[str]:
    if isinstance(obj, Index):
        return {obj.digest} | {d for child in obj.children for d in _blobs_of(child)}
    return {obj.digest} | {blob.digest for blob in obj.blobs}


def _check_oci_layout(layout: Path, obj: Image | Index) -> None:
    """The OCI layout holds ``obj`` under its own digest, and every manifest and blob below it, intact."""
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [obj.digest]
    for digest in _blobs_of(obj):
        path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
        assert _digest(path.read_bytes()) == digest, digest
    top = layout / "blobs" / "sha256" / obj.digest.removeprefix("sha256:")
    assert top.read_bytes() == obj.raw


def test_skopeo_reads_every_migrated_image_referrer_and_fallback_index(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        objs = seed_signed(ecr, "shop/api")
        loose = oci_image([700], seed=191)  # untagged standalone, deployed by digest
        loose_index = oci_index([oci_image([710], seed=192), oci_image([720], seed=193, platform="linux/arm64")])
        ecr.add_image("shop/api", loose)
        ecr.add_image("shop/api", loose_index)
        run(tmp_path, ecr, gl, "--untagged", "tag")

        repo = f"{gl.project_path}/shop/api"
        skopeo = Skopeo(tmp_path, gl.registry_host, gl.credentials)

        # every tag: the images, cosign's tag, the untagged-<hex> tags and the fallback indexes
        cosign_tag = fallback(objs["single"].digest) + ".sig"
        by_tag: dict[str, Image | Index] = {
            "v1": objs["multi"],
            "v2": objs["single"],
            cosign_tag: objs["cosign"],
            untagged_tag(loose.digest): loose,
            untagged_tag(loose_index.digest): loose_index,
        }
        fallback_tags = {fallback(objs[subject].digest) for subject in REFERRERS_OF}
        assert skopeo.tags(repo) == set(by_tag) | fallback_tags
        for tag, obj in by_tag.items():
            assert skopeo.raw(repo, tag) == obj.raw, tag

        # every referrer and platform image by digest, byte-identical
        for name in (*REFERRERS, "amd"):
            assert skopeo.raw(repo, objs[name].digest) == objs[name].raw, name

        # each fallback index as skopeo reads it lists that subject's referrers, with their artifact types
        for subject, names in REFERRERS_OF.items():
            raw = skopeo.raw(repo, fallback(objs[subject].digest))
            index = json.loads(raw)
            assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
            entries = {e["digest"]: e for e in index["manifests"]}
            assert (
                set(entries)
                == {objs[n].digest for n in names}
                == fallback_entries(gl, "shop/api", objs[subject].digest)
            )
            for n in names:
                assert entries[objs[n].digest]["artifactType"] == objs[n].manifest["artifactType"]
                assert entries[objs[n].digest]["size"] == len(objs[n].raw)

        # skopeo copy --all keeps every digest: the multi-arch image and the untagged index into OCI
        # layouts, a signature and the SBOM (referrers, by digest) into OCI layouts and a dir: directory
        for name, ref, obj in (
            ("multi", "v1", objs["multi"]),
            ("loose-index", untagged_tag(loose_index.digest), loose_index),
            ("single", "v2", objs["single"]),
            ("single_sbom", objs["single_sbom"].digest, objs["single_sbom"]),
            ("sbom_sig", objs["sbom_sig"].digest, objs["sbom_sig"]),
        ):
            layout = tmp_path / "oci" / name
            layout.parent.mkdir(exist_ok=True)
            skopeo.copy_all(repo, ref, f"oci:{layout}:copy")
            _check_oci_layout(layout, obj)

        directory = tmp_path / "dir-single-sig"
        skopeo.copy_all(repo, objs["single_sig"].digest, f"dir:{directory}")
        assert (directory / "manifest.json").read_bytes() == objs["single_sig"].raw
        single_sig = objs["single_sig"]
        assert isinstance(single_sig, Image)
        for blob in single_sig.blobs:
            assert _digest((directory / blob.digest.removeprefix("sha256:")).read_bytes()) == blob.digest
