"""GitLab's container registry as a destination, configured from GitLab CI's variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ._credentials import Credentials, CredentialsLike
from ._exceptions import ConfigurationError
from ._reference import Reference, parse_reference

__all__ = ["GitLabDestination"]


class GitLabDestination(BaseModel):
    """Where images go: ``image_prefix`` (``$CI_REGISTRY_IMAGE``) and the credentials to push there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_prefix: str = Field(description="registry host and project path, e.g. registry.gitlab.com/group/project")
    username: str | None = None
    password: SecretStr | None = None
    project_path: str | None = Field(
        None, description="the GitLab project (CI_PROJECT_PATH); GitLab allows two levels below it"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> GitLabDestination:
        """From GitLab CI: ``CI_REGISTRY_IMAGE`` (else ``CI_REGISTRY``/``CI_PROJECT_PATH``),
        ``CI_REGISTRY_USER``/``CI_REGISTRY_PASSWORD``, else ``gitlab-ci-token``/``CI_JOB_TOKEN``.
        Keyword arguments that are not None win."""
        env = os.environ if env is None else env
        prefix = env.get("CI_REGISTRY_IMAGE") or ""
        if not prefix and env.get("CI_REGISTRY") and env.get("CI_PROJECT_PATH"):
            prefix = f"{env['CI_REGISTRY']}/{env['CI_PROJECT_PATH']}".lower()
        username, password = env.get("CI_REGISTRY_USER"), env.get("CI_REGISTRY_PASSWORD")
        if not (username and password) and env.get("CI_JOB_TOKEN"):
            username, password = "gitlab-ci-token", env["CI_JOB_TOKEN"]
        values: dict[str, Any] = {
            "image_prefix": prefix,
            "username": username or None,
            "password": password or None,
            "project_path": (env.get("CI_PROJECT_PATH") or "").lower() or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values["image_prefix"]:
            raise ConfigurationError("no destination: set CI_REGISTRY_IMAGE (GitLab CI does) or pass --to")
        return cls.model_validate(values)

    def prefix(self) -> Reference:
        """The prefix as a repository reference (validated)."""
        ref = parse_reference(self.image_prefix.rstrip("/"))
        if not ref.is_repository:
            raise ConfigurationError(f"destination {self.image_prefix!r} must be host/path without a tag")
        return ref

    def levels_below_project(self) -> int:
        """How many path levels the prefix already sits below the project (0 when unknown)."""
        if not self.project_path:
            return 0
        path = self.prefix().repository
        project = self.project_path.strip("/")
        if path == project or not path.startswith(project + "/"):
            return 0
        return path[len(project) + 1 :].count("/") + 1

    def credentials(self) -> CredentialsLike:
        """Explicit credentials when set; None means Docker's config.json."""
        if self.username and self.password is not None:
            return Credentials(self.username, self.password)
        return None

    def __repr__(self) -> str:
        return f"GitLabDestination(image_prefix={self.image_prefix!r}, username={self.username!r})"
