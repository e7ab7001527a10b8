"""Build-time metadata: the project URLs come from where the project is hosted.

ecrcopy's home is the GitLab project that releases it. Its ``.gitlab-ci.yml`` sets
``ECRCOPY_PROJECT_URL`` to ``$CI_PROJECT_URL`` in the job that builds the distributions, and
their metadata gets Homepage, Documentation, Changelog, Issues and Source URLs from it. Nothing
else is read (``pip install .`` in some other project's CI job does not stamp that project's
address), and without the variable the distributions carry no URLs: an address is never
invented.
"""

from __future__ import annotations

import os
import re
from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface

_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)+")


def project_urls(env: dict[str, str]) -> dict[str, str]:
    """The ``[project.urls]`` table for the project at ``ECRCOPY_PROJECT_URL``."""
    base = env.get("ECRCOPY_PROJECT_URL", "").rstrip("/")
    if not base:
        return {}
    if not _URL.fullmatch(base):
        raise ValueError(f"ECRCOPY_PROJECT_URL must be an https URL of a project, not {base!r}")
    ref = env.get("CI_COMMIT_TAG") or "main"
    return {
        "Homepage": base,
        "Documentation": f"{base}/-/blob/{ref}/README.md#documentation",
        "Changelog": f"{base}/-/blob/{ref}/CHANGELOG.md",
        "Issues": f"{base}/-/issues",
        "Source": f"{base}/-/tree/{ref}",
    }


class CustomMetadataHook(MetadataHookInterface):
    def update(self, metadata: dict[str, Any]) -> None:
        metadata["urls"] = project_urls(dict(os.environ))
