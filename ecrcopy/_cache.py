"""Blob location hints that outlive a run: where earlier runs put each blob in a destination registry.

A later run (say ``ecrcopy copy`` once per repository, or a rerun after a crash) then mounts a
shared layer from a repository an earlier run filled, instead of uploading it again. Entries are
hints, never facts: a stale one costs one refused mount, after which the blob is uploaded as usual.
The file is JSON, written atomically (a temporary file beside it, then a rename; the temporary
file is removed when anything fails) and merged with what other processes wrote meanwhile. A
corrupt or foreign file is ignored with a warning; entries that are not a valid digest and
repository name are dropped, since they end up in mount URLs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from ._reference import is_valid_digest, is_valid_repository

__all__ = ["BlobHints", "default_cache_path"]

log = logging.getLogger("ecrcopy")

_VERSION = 1
_MAX_REPOS = 4
_MAX_DIGESTS_PER_HOST = 200_000
_HOST_RE = re.compile(r"[A-Za-z0-9.\-\[\]:]{1,255}")


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
            merged = _read(self.path, warn=False)  # load() already said what was wrong with it
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
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump({"version": _VERSION, "hosts": merged}, out, separators=(",", ":"))
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._added = {}
        except OSError as exc:
            log.warning("cannot write blob location cache %s: %s", self.path, exc.strerror or exc)


def _read(path: Path, *, warn: bool = True) -> Locations:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        if warn:
            log.warning("ignoring unreadable blob location cache %s (%s)", path, exc.__class__.__name__)
        return {}
    hosts = data.get("hosts") if isinstance(data, dict) and data.get("version") == _VERSION else None
    if not isinstance(hosts, dict):
        if warn:
            log.warning("ignoring blob location cache %s: not a version %d cache file", path, _VERSION)
        return {}
    clean: Locations = {}
    for host, digests in hosts.items():
        if not (isinstance(host, str) and _HOST_RE.fullmatch(host) and isinstance(digests, dict)):
            continue
        table = clean[host] = {}
        for digest, repos in digests.items():
            if isinstance(digest, str) and is_valid_digest(digest) and isinstance(repos, list):
                good = [r for r in repos if isinstance(r, str) and is_valid_repository(r)][:_MAX_REPOS]
                if good:
                    table[digest] = good
    return clean
