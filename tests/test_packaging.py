"""The distributions: ``python -m build`` makes an sdist and a wheel that ``twine check`` accepts,
and the wheel, installed with pip into a fresh virtual environment, runs the CLI and the demo.

Nothing is downloaded (tests talk only to 127.0.0.1): the build runs without isolation, with the
build backend of the test environment, and the fresh environment sees the test environment's
installed dependencies through a ``.pth`` file, while ecrcopy itself comes from the wheel only
(the test environment's editable ecrcopy is left out, and the checks prove where it was imported
from).
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tarfile
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ecrcopy

ROOT = Path(__file__).resolve().parent.parent
#: where the project is hosted decides its URLs (hatch_build.py): the default build here has none
HOSTING = ("CI_PROJECT_URL", "ECRCOPY_PROJECT_URL", "CI_COMMIT_TAG")
OFFLINE = {
    **{k: v for k, v in os.environ.items() if k not in HOSTING},
    "PIP_NO_INDEX": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


@dataclass
class Built:
    wheel: Path
    sdist: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def run(*argv: str | Path, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env or OFFLINE, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def dependencies_dir(target: Path) -> Path:
    """The test environment's installed packages, ecrcopy's own entries left out, as symlinks."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("ecrcopy", "_editable_impl_ecrcopy", "__editable__")) or entry.suffix == ".pth":
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT, cwd=work)
    wheel = next(dist.glob("ecrcopy-*.whl"))
    sdist = next(dist.glob("ecrcopy-*.tar.gz"))
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    site = Path(
        run(
            venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
        ).strip()
    )
    (site / "ecrcopy-test-dependencies.pth").write_text(f"{dependencies_dir(work / 'deps')}\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", wheel, cwd=work)
    yield Built(wheel, sdist, venv)


def test_twine_accepts_both_distributions(built: Built) -> None:
    out = run(sys.executable, "-m", "twine", "check", "--strict", built.wheel, built.sdist, cwd=built.venv)
    assert out.count("PASSED") == 2, out


def test_metadata_has_one_version_the_license_and_the_dependencies(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = whl.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(whl.read(meta_name).decode())
    assert metadata["Name"] == "ecrcopy"
    assert metadata["Version"] == ecrcopy.__version__  # one source: ecrcopy/__init__.py
    assert built.wheel.name.startswith(f"ecrcopy-{ecrcopy.__version__}-")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "ecrcopy/py.typed" in names and "ecrcopy/testing/demo.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)
    requires = {
        r.split(">")[0].split("[")[0].strip() for r in metadata.get_all("Requires-Dist") or () if "extra" not in r
    }
    assert {"httpx", "httptools", "anyio", "pydantic", "boto3", "rich"} <= requires
    assert "aiohttp" not in requires  # an extra: ecrcopy[aiohttp]
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata.get_all("Project-URL") is None  # built outside a hosted project: no invented address
    with tarfile.open(built.sdist) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "ecrcopy/__init__.py",
        "tests/conftest.py",
    } <= members
    assert not any("__pycache__" in m or m.startswith(".venv") for m in members)


def test_the_installed_wheel_runs_the_cli(built: Built, tmp_path: Path) -> None:
    where = run(built.bin / "python", "-c", "import ecrcopy; print(ecrcopy.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(built.venv), where  # the wheel's copy, not the checkout
    assert run(built.bin / "ecrcopy", "--version", cwd=tmp_path).strip() == f"ecrcopy {ecrcopy.__version__}"
    assert "--shard-wait" in run(built.bin / "ecrcopy", "migrate", "--help", cwd=tmp_path)


def test_the_installed_wheel_runs_the_demo(built: Built, tmp_path: Path) -> None:
    out = run(built.bin / "python", "-m", "ecrcopy.testing.demo", cwd=tmp_path, timeout=600)
    assert "OK: every ECR tag and signature arrived in GitLab byte-exact" in out


def _hatch_build() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_project_urls_come_from_the_hosting_project() -> None:
    urls = _hatch_build().project_urls
    assert urls({}) == {}
    base = "https://gitlab.example.com/platform/ecrcopy"
    assert urls({"CI_PROJECT_URL": base}) == {}  # another project's job building ecrcopy: not its address
    got = urls({"ECRCOPY_PROJECT_URL": base + "/", "CI_COMMIT_TAG": "v0.2.0"})
    assert got["Homepage"] == base and got["Issues"] == f"{base}/-/issues"
    assert got["Changelog"] == f"{base}/-/blob/v0.2.0/CHANGELOG.md"
    for bad in ("http://gitlab.example.com/x", "https://host", "https://h/x y", "javascript:alert(1)"):
        with pytest.raises(ValueError, match="must be an https URL"):
            urls({"ECRCOPY_PROJECT_URL": bad})


def test_a_wheel_built_in_a_hosted_project_names_its_urls(tmp_path: Path) -> None:
    base = "https://gitlab.example.com/platform/ecrcopy"
    env = {**OFFLINE, "ECRCOPY_PROJECT_URL": base}
    run(sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", tmp_path, ROOT, cwd=tmp_path, env=env)
    wheel = next(tmp_path.glob("ecrcopy-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(whl.read(meta).decode())
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or ())
    assert urls == {
        "Homepage": base,
        "Documentation": f"{base}/-/blob/main/README.md#documentation",
        "Changelog": f"{base}/-/blob/main/CHANGELOG.md",
        "Issues": f"{base}/-/issues",
        "Source": f"{base}/-/tree/main",
    }
    out = run(sys.executable, "-m", "twine", "check", "--strict", wheel, cwd=tmp_path)
    assert "PASSED" in out
