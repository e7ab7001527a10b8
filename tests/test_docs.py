"""The documentation keeps up with the code: every flag in its command's section of docs/cli.md, links resolve."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ecrcopy import _cli

ROOT = Path(__file__).resolve().parent.parent


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(_commands(sub, f"{prefix}{name} "))
    return found


def test_every_flag_of_every_command_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    commands = _commands(_cli.build_parser())
    assert {"copy", "migrate", "verify", "report merge"} <= set(commands)
    missing = []
    for name, parser in commands.items():
        if name == "report":  # only a group of actions
            continue
        heading = f"\n## `ecrcopy {name}`\n"
        assert heading in text, f"docs/cli.md has no section on ecrcopy {name}"
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help" and f"`{flag}" not in section:
                    missing.append(f"ecrcopy {name} {flag}")
    assert not missing, missing


def test_relative_links_in_the_docs_resolve() -> None:
    broken = []
    for page in [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
