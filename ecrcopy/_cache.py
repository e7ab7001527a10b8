"""Blob location hints that outlive a run: where earlier runs put each blob in a destination registry.

A later run (say ``ecrcopy copy`` once per repository, or a rerun after a crash) then mounts a
shared layer from a repository an earlier run filled, instead of uploading it again. Entries are
hints, never facts: a stale one costs one refused mount, after which the blob is uploaded as usual.
The file is JSON, written atomically and merged with what other processes wrote meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["BlobHints", "default_cache_path"]

log = logging.getLogger("ecrcopy")

_VERSION = 1
_MAX_REPOS = 4
_MAX_DIGESTS_PER_HOST = 200_000


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/ecrcopy/blob-locations-v1.json`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecrcopy" / f"blob-locations-v{_VERSION}.json"


Locations = dict[str, dict[str, list[str]]]  # host -> digest -> repositories


class BlobHints:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: Locations = {}
        self._added: Locations = {}

    def candidates(self, host: str, digest: str) -> list[str]:
        return list(self._seen.get(host, {}).get(digest, ()))

    def add(self, host: str, digest: str, repo: str) -> None:
        for table in (self._seen, self._added):
            repos = table.setdefault(host, {}).setdefault(digest, [])
            if repo in repos:
                repos.remove(repo)
            repos.insert(0, repo)  # most recent first
            del repos[_MAX_REPOS:]

    def load(self) -> None:
        self._seen = _read(self.path)

    def save(self) -> None:
        """Merge this run's additions into the file; a failure is logged, never raised."""
        if not self._added:
            return
        try:
            merged = _read(self.path)
            for host, digests in self._added.items():
                table = merged.setdefault(host, {})
                for digest, repos in digests.items():
                    # re-inserted, so the most recently used digests come last and the oldest are trimmed
                    table[digest] = list(dict.fromkeys([*repos, *table.pop(digest, [])]))[:_MAX_REPOS]
                if len(table) > _MAX_DIGESTS_PER_HOST:
                    for stale in list(table)[: len(table) - _MAX_DIGESTS_PER_HOST]:
                        del table[stale]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".blob-locations-")
            with os.fdopen(fd, "w") as out:
                json.dump({"version": _VERSION, "hosts": merged}, out, separators=(",", ":"))
            os.replace(tmp, self.path)
            self._added = {}
        except OSError as exc:
            log.warning("cannot write blob location cache %s: %s", self.path, exc.strerror or exc)


def _read(path: Path) -> Locations:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("ignoring unreadable blob location cache %s: %s", path, exc)
        return {}
    hosts = data.get("hosts") if isinstance(data, dict) and data.get("version") == _VERSION else None
    if not isinstance(hosts, dict):
        return {}
    clean: Locations = {}
    for host, digests in hosts.items():
        if isinstance(host, str) and isinstance(digests, dict):
            clean[host] = {
                d: [r for r in repos if isinstance(r, str)][:_MAX_REPOS]
                for d, repos in digests.items()
                if isinstance(d, str) and isinstance(repos, list)
            }
    return clean
