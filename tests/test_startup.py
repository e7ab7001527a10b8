"""Start-up: ``import ecrcopy`` and the CLI import only what they use.

Each check runs a fresh interpreter and looks at ``sys.modules`` afterwards; no timings here (those
belong to benchmarks). ``--version``, ``--help`` and ``import ecrcopy`` load no engine, no httpx,
pydantic or boto3; ``copy`` never loads boto3 or the migration; httpx comes without its own command
line (click, pygments, rich); rich comes only with a progress display.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ecrcopy
from ecrcopy import _cli
from ecrcopy._cache import default_cache_path
from ecrcopy._options import CopyOptions
from ecrcopy._plan import MigrationOptions
from ecrcopy.testing import free_port

#: Never loaded by ``import ecrcopy``, ``ecrcopy --version`` or ``ecrcopy <command> --help``.
HEAVY = (
    "boto3",
    "botocore",
    "httpx",
    "httpcore",
    "aiohttp",
    "anyio",
    "pydantic",
    "pydantic_core",
    "rich",
    "click",
    "pygments",
    "ecrcopy._api",
    "ecrcopy._cli_support",
    "ecrcopy._client",
    "ecrcopy._copier",
    "ecrcopy._credentials",
    "ecrcopy._ecr",
    "ecrcopy._migrate",
    "ecrcopy._models",
    "ecrcopy._options",
    "ecrcopy._plan",
    "ecrcopy._report",
    "ecrcopy._verify",
)

#: What a copy does not need: the AWS SDK, the migration, httpx's command line, a progress display.
NOT_FOR_COPY = (
    "boto3",
    "botocore",
    "rich",
    "click",
    "pygments",
    "ecrcopy._ecr",
    "ecrcopy._migrate",
    "ecrcopy._plan",
    "ecrcopy._verify",
)

_REPORT = "\nimport json as _j, sys as _s\nprint('MODULES=' + _j.dumps(sorted(_s.modules)))\n"


def modules_after(code: str, *, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """Run ``code`` in a fresh interpreter; the modules loaded at its end, and what it printed before."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ECRCOPY_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", code + _REPORT],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before, _, modules = proc.stdout.rpartition("MODULES=")
    return set(json.loads(modules)), before


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


def cli_snippet(*argv: str) -> str:
    """Run ``python -m ecrcopy ARGV`` in-process (``runpy``, as ``-m`` does) and keep going after its exit."""
    return (
        "import runpy, sys\n"
        f"sys.argv = ['ecrcopy', *{list(argv)!r}]\n"
        "try:\n"
        "    runpy.run_module('ecrcopy', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code)\n"
    )


def test_import_ecrcopy_is_light() -> None:
    modules, _ = modules_after("import ecrcopy")
    assert loaded(modules, HEAVY) == []
    assert "ecrcopy._exceptions" in modules  # the exceptions load eagerly: plain classes


def test_version_is_light() -> None:
    modules, out = modules_after(cli_snippet("--version"))
    assert f"ecrcopy {ecrcopy.__version__}" in out
    assert "EXIT 0" in out
    assert loaded(modules, HEAVY) == []


def test_version_through_main_is_light() -> None:
    code = (
        "from ecrcopy._cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code)\n"
    )
    modules, out = modules_after(code)
    assert "EXIT 0" in out
    assert loaded(modules, HEAVY) == []


@pytest.mark.parametrize("command", [(), ("copy",), ("migrate",), ("verify",)], ids=lambda c: " ".join(c) or "top")
def test_help_is_light(command: tuple[str, ...]) -> None:
    modules, out = modules_after(cli_snippet(*command, "--help"))
    assert "usage: ecrcopy" in out
    assert "EXIT 0" in out
    assert loaded(modules, HEAVY) == []


def test_parsing_a_copy_is_light() -> None:
    code = "from ecrcopy._cli import build_parser\nbuild_parser().parse_args(['copy', 'a/b', 'c/d', '--tag', 'v1'])\n"
    modules, _ = modules_after(code)
    assert loaded(modules, HEAVY) == []


def test_copy_command_does_not_import_boto3_or_the_migration() -> None:
    """A real ``copy`` run (to a closed port: it fails fast) loads the engine, but not the ECR client."""
    port = free_port()
    code = (
        "from ecrcopy._cli import main\n"
        f"rc = main(['copy', '127.0.0.1:{port}/a', '127.0.0.1:{port}/b', '--retries', '1', '--no-blob-cache'])\n"
        "print('RC', rc)\n"
    )
    modules, out = modules_after(code, env={"ECRCOPY_SRC_CREDS": "u:p", "ECRCOPY_DEST_CREDS": "u:p"})
    assert "RC 2" in out  # cannot reach registry
    assert "ecrcopy._copier" in modules and "httpx" in modules
    assert loaded(modules, NOT_FOR_COPY) == []


def test_copy_api_does_not_import_boto3_or_the_migration() -> None:
    modules, _ = modules_after("import ecrcopy\necrcopy.copy_repository, ecrcopy.copy_image, ecrcopy.Copier\n")
    assert "ecrcopy._copier" in modules
    assert loaded(modules, NOT_FOR_COPY) == []


def test_rich_only_with_a_progress_display() -> None:
    code = (
        "import io, sys\n"
        "from ecrcopy._cli_support import Reporter\n"
        "with Reporter(io.StringIO(), quiet=False):\n"
        "    pass\n"
        "print('PLAIN', 'rich' in sys.modules)\n"
        "class Tty(io.StringIO):\n"
        "    def isatty(self):\n"
        "        return True\n"
        "with Reporter(Tty(), quiet=False):\n"
        "    pass\n"
        "print('TTY', 'rich' in sys.modules)\n"
    )
    _, out = modules_after(code)
    assert "PLAIN False" in out
    assert "TTY True" in out


def test_httpx_without_its_command_line() -> None:
    modules, _ = modules_after("import ecrcopy._client\n")
    assert "httpx" in modules
    assert loaded(modules, ("rich", "click", "pygments")) == []


def test_httpx_main_still_works() -> None:
    code = (
        "import sys\n"
        "import ecrcopy, httpx\n"
        "assert callable(httpx.main)\n"
        "print('BEFORE', 'click' in sys.modules)\n"
        "from httpx._main import print_help\n"  # any name of the real module
        "print('NAME', httpx.main.name)\n"
        "try:\n"
        "    httpx.main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code)\n"
        "print('REAL', sys.modules['httpx._main'].__file__.endswith('_main.py'))\n"
    )
    _, out = modules_after(code)
    assert "BEFORE False" in out
    assert "NAME main" in out
    assert "HTTPX" in out  # its help, printed by rich
    assert "EXIT 0" in out
    assert "REAL True" in out


def test_httpx_imported_first_is_left_alone() -> None:
    code = (
        "import httpx, sys\nimport ecrcopy\nprint('REAL', sys.modules['httpx._main'].__file__.endswith('_main.py'))\n"
    )
    _, out = modules_after(code)
    assert "REAL True" in out


# --- the public names, imported on first use ---------------------------------------------------


def test_every_public_name_resolves_to_its_module() -> None:
    eager = {"__version__"} | {n for n in ecrcopy.__all__ if n in vars(ecrcopy._exceptions)}
    assert set(ecrcopy._LAZY) | eager == set(ecrcopy.__all__)
    assert not set(ecrcopy._LAZY) & eager
    for name, module in ecrcopy._LAZY.items():
        assert getattr(ecrcopy, name) is getattr(importlib.import_module(f"ecrcopy.{module}"), name), name


def test_lazy_names_resolve_in_a_fresh_interpreter() -> None:
    code = (
        "import ecrcopy, ecrcopy._copier, ecrcopy._api\n"
        "assert ecrcopy.Copier is ecrcopy._copier.Copier\n"
        "assert ecrcopy.copy_repository is ecrcopy._api.copy_repository\n"
        "assert ecrcopy.migrate is ecrcopy._api.migrate\n"
        "assert ecrcopy.EcrSource.__module__ == 'ecrcopy._ecr'\n"
        "from ecrcopy import VerifyReport, parse_reference\n"
        "assert parse_reference('example.com/a:b').tag == 'b'\n"
        "print('OK')\n"
    )
    _, out = modules_after(code)
    assert "OK" in out


def test_star_import_gives_all() -> None:
    code = "from ecrcopy import *\nprint('MISSING', [n for n in __import__('ecrcopy').__all__ if n not in globals()])\n"
    _, out = modules_after(code)
    assert "MISSING []" in out


def test_dir_lists_all_and_unknown_names_fail() -> None:
    assert set(ecrcopy.__all__) <= set(dir(ecrcopy))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = ecrcopy.NoSuchName  # type: ignore[attr-defined]


def test_type_checking_imports_match_the_lazy_table() -> None:
    """The ``if TYPE_CHECKING:`` block (what type checkers see) and ``_LAZY`` name the same things."""
    tree = ast.parse(Path(ecrcopy.__file__).read_text())
    seen: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1 and imp.module
                seen.update({alias.name: imp.module for alias in imp.names})
    assert seen == ecrcopy._LAZY


# --- what the help says matches what the models do ---------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_help_defaults_equal_the_model_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_defaults = CopyOptions()
    assert copy_defaults.image_concurrency == _cli.HELP_IMAGE_CONCURRENCY
    assert copy_defaults.read_timeout == _cli.HELP_READ_TIMEOUT
    assert MigrationOptions().shard_wait == _cli.HELP_SHARD_WAIT
    commands = _subparsers(_cli.build_parser())
    for name, parser in commands.items():
        if name == "report":  # works on report files: no registry options
            continue
        concurrency = _option(parser, "--concurrency").help or ""
        assert f"(default {copy_defaults.image_concurrency})" in concurrency, name
        read_timeout = _option(parser, "--read-timeout").help or ""
        assert f"(default {copy_defaults.read_timeout:g})" in read_timeout, name
    for name in ("copy", "migrate"):
        assert _option(commands[name], "--on-conflict").default == copy_defaults.on_conflict
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        blob_cache = _option(commands[name], "--blob-cache").help or ""
        shown = blob_cache.split("default: ", 1)[1].rstrip(")").replace("$XDG_CACHE_HOME", str(tmp_path))
        assert Path(shown) == default_cache_path()
    untagged = MigrationOptions.model_fields["untagged"].default
    for name in ("migrate", "verify"):
        action = _option(commands[name], "--untagged")
        assert action.default == untagged
        assert f"(default {untagged})" in (action.help or "")
