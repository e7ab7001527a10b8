"""ECR's archive storage class: archived and activating images are planned, reported and never pulled."""

from __future__ import annotations

import json
from pathlib import Path

from ecrcopy.testing import EcrEmulator, GitLabEmulator, oci_image
from tests.test_migrate import cli_env, migrate


def tag_of(source: str) -> str:
    return source.rsplit("/", 1)[1].split("@")[0].split(":", 1)[1]


def test_archived_and_activating_images_are_reported_with_the_restore_command(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        live = oci_image([4000], seed=1)
        old = oci_image([5000], seed=2)
        waking = oci_image([6000], seed=3)
        ecr.add_image("shop/api", live, ["v3"])
        ecr.add_image("shop/api", old, ["v1", "v1.0"])
        ecr.add_image("shop/api", waking, ["v2"])
        ecr.archive_image("shop/api", old.digest)
        ecr.set_activating("shop/api", waking.digest)
        ecr.reset_calls()

        dry = migrate("--dry-run", "--report", str(tmp_path / "dry.json"), env=cli_env(ecr, gl))
        assert dry.returncode == 0, dry.stderr
        dry_report = json.loads((tmp_path / "dry.json").read_text())
        assert {(tag_of(i["source"]), i["reason"]) for i in dry_report["images"]} >= {
            ("v1", "archived"),
            ("v1.0", "archived"),
            ("v2", "activating"),
        }

        gl.registry.reset()
        proc = migrate("--report", str(tmp_path / "report.json"), env=cli_env(ecr, gl))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads((tmp_path / "report.json").read_text())
        by_tag = {tag_of(i["source"]): i for i in report["images"]}
        assert by_tag["v3"]["status"] == "copied"
        for tag, reason in (("v1", "archived"), ("v1.0", "archived"), ("v2", "activating")):
            assert by_tag[tag]["status"] == "skipped" and by_tag[tag]["reason"] == reason, by_tag[tag]
        command = (
            f"aws ecr update-image-storage-class --region {ecr.region} --registry-id {ecr.account_id}"
            " --repository-name shop/api"
            f" --image-id imageDigest={old.digest} --target-storage-class STANDARD"
        )
        assert command in by_tag["v1"]["error"]
        assert report["restore_commands"] == [command]  # once per image, not per tag
        assert report["plan"]["tags_archived"] == 3
        assert command in proc.stdout and "ACTIVATING" in proc.stdout
        # nothing was written for them, nor pulled: only the live image's manifest went up
        puts = [r.path for r in gl.registry.manifest_puts()]
        assert puts == [f"/v2/{gl.project_path}/shop/api/manifests/v3"]
        assert "UpdateImageStorageClass" not in ecr.calls
