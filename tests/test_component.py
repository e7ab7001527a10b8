"""The CI/CD component ``templates/migrate-ecr.yml``: what GitLab makes of it, and its jobs run for real.

GitLab's side (input validation, interpolation, ``rules:``, job checks) is emulated by
:mod:`tests._gitlab_ci`. The runner's side is emulated here: each job runs in a directory of its own
(``CI_PROJECT_DIR``) with the variables a GitLab job gets, its ``before_script`` and ``script`` lines
in one ``bash`` with ``set -eo pipefail`` (as GitLab Runner runs them: one shell, variables kept from
line to line, the first failing line ends the job), its artifacts collected from the declared
``artifacts:paths`` and passed to the job that ``needs`` it, and the two ``parallel:`` jobs at the
same time. The "image" is a fresh virtual environment per job, into which the job's own
``pip install`` line installs ecrcopy from a wheel built from this tree, offline (``PIP_NO_INDEX``;
the dependencies come from the test environment through a ``.pth`` file, as in test_packaging.py).
A fresh environment costs about 2 s per job, so every job gets one, as every GitLab job gets a
fresh container. The registries are ``ecrcopy.testing``'s ECR and GitLab emulations on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ecrcopy
from ecrcopy.testing import (
    DOCKER_LAYER,
    Blob,
    EcrEmulator,
    GitLabEmulator,
    Image,
    Index,
    docker_image,
    fetch_manifest,
    list_tags,
    oci_artifact,
    oci_image,
    oci_index,
)
from ecrcopy.testing.demo import ci_env

from ._gitlab_ci import (
    DEFAULT_STAGES,
    EXAMPLE,
    ROOT,
    Component,
    ComponentError,
    InputSpec,
    NotEmulated,
    added_jobs,
    evaluate_if,
    interpolate,
    interpolate_component,
    jobs_of,
    load_component,
    render_example,
    resolve_inputs,
    ruby_to_s,
    validate_jobs,
)
from .test_packaging import dependencies_dir

PROJECT = "acme/ecr-mirror"
KiB = 1024
MIGRATE, VERIFY = "migrate-ecr-images", "migrate-ecr-verify"
#: Job keys this runner emulates; a template that grows another key fails here until it is emulated.
RUNNER_KEYS = {"stage", "image", "rules", "parallel", "timeout", "variables", "before_script", "script", "artifacts"}
JOB_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def component() -> Component:
    return load_component()


# -- the component file and GitLab's checks --------------------------------------------------------


def test_the_component_is_where_the_catalog_looks_and_every_input_is_documented(component: Component) -> None:
    assert component.path == ROOT / "templates" / "migrate-ecr.yml"  # <project>/migrate-ecr@<version>
    assert len(component.inputs) >= 12
    for spec in component.inputs.values():
        assert spec.description and len(spec.description) > 20, spec.name
        assert not spec.required, f"{spec.name}: the component must work with no inputs at all"
        assert resolve_inputs({spec.name: spec}, {})[spec.name] == spec.default
    kinds = {name: spec.type for name, spec in component.inputs.items()}
    assert kinds["parallel"] == "number"
    assert kinds["referrers"] == kinds["verify"] == kinds["deep"] == "boolean"
    assert component.inputs["untagged"].options == ("skip", "tag")
    assert {"stage", "verify_stage", "image", "install", "include", "exclude", "tags", "args"} <= set(kinds)
    assert component.inputs["install"].default == "ecrcopy"


def test_default_inputs_give_two_jobs_that_gitlab_accepts(component: Component) -> None:
    config = interpolate_component(component, {})
    jobs = jobs_of(config)
    assert set(jobs) == {MIGRATE, VERIFY}
    validate_jobs(jobs)
    migrate, verify = jobs[MIGRATE], jobs[VERIFY]
    assert migrate["parallel"] == 4 and isinstance(migrate["parallel"], int)  # one block: the number itself
    assert DEFAULT_STAGES.index(verify["stage"]) > DEFAULT_STAGES.index(migrate["stage"])
    assert verify["needs"] == [{"job": MIGRATE, "artifacts": True}]
    assert verify["variables"] == migrate["variables"]  # the same selection for both
    for job in jobs.values():
        artifacts = job["artifacts"]
        assert artifacts["when"] == "always"
        assert all("*" not in p and "$" not in p and not p.startswith("./") for p in artifacts["paths"])
        assert "$[[" not in json.dumps(job)
    assert added_jobs(config, {"BULK_MIGRATE": "true"}) == {MIGRATE: "on_success", VERIFY: "always"}
    assert added_jobs(config, {}) == {}
    assert added_jobs(config, {"BULK_MIGRATE": "yes"}) == {}


@pytest.mark.parametrize(
    ("given_inputs", "message"),
    [
        (
            {"untagged": "all"},
            "`untagged` input: `all` cannot be used because it is not in the list of allowed options",
        ),
        ({"parallel": "4"}, "`parallel` input: provided value is not a number"),
        ({"parallel": True}, "`parallel` input: provided value is not a number"),
        ({"referrers": "false"}, "`referrers` input: provided value is not a boolean"),
        ({"verify": 0}, "`verify` input: provided value is not a boolean"),
        ({"include": ["a", "b"]}, "`include` input: provided value is not a string"),
        ({"paralel": 2}, "unknown input arguments: paralel"),
        ({"job_prefix": "Migrate ECR"}, "`job_prefix` input: provided value does not match required RegEx pattern"),
    ],
)
def test_invalid_inputs_are_rejected_as_gitlab_rejects_them(
    component: Component, given_inputs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ComponentError) as caught:
        interpolate_component(component, given_inputs)
    assert caught.value.errors == [message]


def test_every_error_is_listed_and_the_first_three_are_shown(component: Component) -> None:
    with pytest.raises(ComponentError) as caught:
        interpolate_component(component, {"nope": 1, "parallel": "x", "untagged": "all", "deep": "yes"})
    assert caught.value.errors[0] == "unknown input arguments: nope"
    assert len(caught.value.errors) == 4
    assert str(caught.value) == ", ".join(caught.value.errors[:3])


@pytest.mark.parametrize(
    ("parallel", "message"),
    [
        (0, f"jobs:{MIGRATE}:parallel config must be greater than or equal to 1"),
        (201, f"jobs:{MIGRATE}:parallel config must be less than or equal to 200"),
        (2.5, f"jobs:{MIGRATE}:parallel should be an integer or a hash"),
    ],
)
def test_a_parallel_outside_what_gitlab_allows_fails_the_job_check(
    component: Component, parallel: float, message: str
) -> None:
    jobs = jobs_of(interpolate_component(component, {"parallel": parallel}))  # a number: the input accepts it
    with pytest.raises(ComponentError) as caught:
        validate_jobs(jobs)
    assert caught.value.errors == [message]


def test_stages_must_exist_and_verify_must_come_later(component: Component) -> None:
    jobs = jobs_of(interpolate_component(component, {"stage": "migrate", "verify_stage": "check"}))
    validate_jobs(jobs, (".pre", "migrate", "check", ".post"))
    with pytest.raises(ComponentError, match="chosen stage migrate does not exist"):
        validate_jobs(jobs)
    with pytest.raises(ComponentError, match=f"'{VERIFY}' job needs '{MIGRATE}' job, but .* not in any previous"):
        validate_jobs(jobs, (".pre", "check", "migrate", ".post"))


def test_verify_false_leaves_the_verify_job_out(component: Component) -> None:
    config = interpolate_component(component, {"verify": False})
    assert added_jobs(config, {"BULK_MIGRATE": "true"}) == {MIGRATE: "on_success"}
    on = interpolate_component(component, {"verify": True})
    assert added_jobs(on, {"BULK_MIGRATE": "true"}) == {MIGRATE: "on_success", VERIFY: "always"}


def test_run_if_decides_which_pipelines_get_the_jobs(component: Component) -> None:
    every = interpolate_component(component, {"run_if": "$CI_PIPELINE_ID"})
    assert set(added_jobs(every, {"CI_PIPELINE_ID": "42"})) == {MIGRATE, VERIFY}
    scheduled = interpolate_component(component, {"run_if": '$CI_PIPELINE_SOURCE == "schedule"'})
    assert set(added_jobs(scheduled, {"CI_PIPELINE_SOURCE": "schedule"})) == {MIGRATE, VERIFY}
    assert added_jobs(scheduled, {"CI_PIPELINE_SOURCE": "push", "BULK_MIGRATE": "true"}) == {}


def test_the_job_prefix_names_both_jobs_so_the_component_can_be_included_twice(component: Component) -> None:
    a = jobs_of(interpolate_component(component, {"job_prefix": "ecr-team-a", "include": "team-a/.*"}))
    b = jobs_of(interpolate_component(component, {"job_prefix": "ecr-team-b", "include": "team-b/.*"}))
    assert set(a) == {"ecr-team-a-images", "ecr-team-a-verify"}
    assert a["ecr-team-a-verify"]["needs"] == [{"job": "ecr-team-a-images", "artifacts": True}]
    validate_jobs({**a, **b})
    assert a["ecr-team-a-images"]["variables"]["MIGRATE_ECR_INCLUDE"] == {"value": "team-a/.*", "expand": False}


# -- the emulation's own rules (GitLab's documented interpolation behaviour) ---------------------------

_plain = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\\$"), max_size=20)


@given(value=st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), _plain), a=_plain, b=_plain)
def test_one_block_keeps_the_type_and_embedded_blocks_become_text(value: Any, a: str, b: str) -> None:
    ctx = {"inputs": {"x": value}}
    whole = interpolate({"k": "$[[ inputs.x ]]", "l": ["$[[inputs.x]]"]}, ctx)
    assert whole == {"k": value, "l": [value]} and type(whole["k"]) is type(value)
    embedded = interpolate(f"{a}<$[[ inputs.x ]]>{b}", ctx)
    assert embedded == f"{a}<{ruby_to_s(value)}>{b}"
    assert ruby_to_s(True) == "true" and ruby_to_s(4) == "4"


def test_keys_are_interpolated_and_array_inputs_spliced() -> None:
    ctx = {"inputs": {"name": "job", "more": ["b", "c"]}}
    assert interpolate({"$[[ inputs.name ]]-1": ["a", "$[[ inputs.more ]]", "d"]}, ctx) == {
        "job-1": ["a", "b", "c", "d"]
    }


def test_embedded_values_are_replaced_the_way_rubys_gsub_replaces() -> None:
    ctx = {"inputs": {"x": r"a\\b\0c\1d"}}
    assert interpolate("$[[ inputs.x ]]", ctx) == r"a\\b\0c\1d"  # the whole scalar: the value itself
    # embedded: "\\" is one backslash, "\0" the block itself, "\1" an empty group
    assert interpolate("<$[[ inputs.x ]]>", ctx) == r"<a\b$[[ inputs.x ]]cd>"


def test_unknown_keys_functions_and_access_patterns_are_gitlab_errors() -> None:
    ctx = {"inputs": {"x": "v"}}
    for text, message in [
        ("$[[ inputs.y ]]", "unknown interpolation key: `y`"),
        ("$[[ inputs ]]", "invalid interpolation access pattern"),
        (
            "$[[ inputs.x | shout ]]",
            "no function matching `shout`: check that the function name, arguments, and types are correct",
        ),
    ]:
        with pytest.raises(ComponentError) as caught:
            interpolate(text, ctx)
        assert caught.value.errors == [message]
    with pytest.raises(NotEmulated):
        interpolate("$[[ inputs.x | posix_escape ]]", ctx)


@given(value=st.text(max_size=8), options=st.lists(st.text(max_size=8), min_size=1, max_size=4))
def test_a_string_input_accepts_exactly_its_options(value: str, options: list[str]) -> None:
    spec = InputSpec(name="o", options=tuple(options), default=options[0])
    if value in options:
        assert resolve_inputs({"o": spec}, {"o": value}) == {"o": value}
    else:
        with pytest.raises(ComponentError, match="is not in the list of allowed options"):
            resolve_inputs({"o": spec}, {"o": value})


@given(
    variables=st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["", "x", "true"]), max_size=2),
    literal=st.sampled_from(["", "x", "true"]),
)
def test_rules_if_compares_variables_with_strings(variables: dict[str, str], literal: str) -> None:
    a = variables.get("A")
    assert evaluate_if(f'$A == "{literal}"', variables) is (a == literal)
    assert evaluate_if(f"$A != '{literal}'", variables) is (a != literal)
    assert evaluate_if("$A", variables) is bool(a)
    assert evaluate_if('$A || $B && $B == "x"', variables) is (bool(a) or variables.get("B") == "x")
    assert evaluate_if('($A || $B) && "x" == "x"', variables) is (bool(a) or bool(variables.get("B")))
    assert evaluate_if("$A == null", variables) is (a is None)


# -- quoting: what the script lines hand to ecrcopy ------------------------------------------------


@pytest.fixture(scope="module")
def argv_recorder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with an ``ecrcopy`` that writes its arguments as JSON lines (only for the quoting test)."""
    bin_dir = tmp_path_factory.mktemp("recorder")
    script = bin_dir / "ecrcopy"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(os.environ['ARGV_LOG'], 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(0o755)
    return bin_dir


_hostile = st.text(
    st.characters(exclude_categories=["Cs", "Cc"]) | st.sampled_from("\n\t"),
    min_size=1,
    max_size=24,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(include=_hostile, tags=_hostile)
def test_selection_inputs_reach_ecrcopy_exactly_as_written(
    component: Component, argv_recorder: Path, tmp_path: Path, include: str, tags: str
) -> None:
    """Quotes, ``$``, backticks, globs, spaces, newlines: each regular expression arrives as one
    argument, unchanged, in both jobs; the empty exclude adds no flag."""
    jobs = jobs_of(interpolate_component(component, {"include": include, "tags": tags, "referrers": False}))
    log = tmp_path / "argv.jsonl"
    log.unlink(missing_ok=True)
    (tmp_path / "ecrcopy-reports").mkdir(exist_ok=True)
    for job in jobs.values():
        env = {"PATH": f"{argv_recorder}:/usr/bin:/bin", "ARGV_LOG": str(log), **job_variables(job)}
        lines = [line for line in job["script"] if line.startswith("ecrcopy")]
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-c", "set -eo pipefail\n" + "\n".join(lines)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    migrate, verify = calls[0], calls[1]
    for argv in (migrate, verify):
        assert argv[argv.index("--include") + 1] == include
        assert argv[argv.index("--tags") + 1] == tags
        assert "--exclude" not in argv and argv.count("--no-referrers") == 1
    assert verify[0] == "verify" and "--deep" in verify and migrate[0] == "migrate"


# -- the example for users without components --------------------------------------------------------


def test_the_example_is_the_component_with_its_defaults(component: Component) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text == render_example(component), "docs/examples/gitlab-ci.yml is out of date: run `make examples`"
    assert yaml.safe_load(text) == interpolate_component(component, {})
    for kept in (
        "1. In Settings > CI/CD > Variables set (masked): AWS_ACCOUNT_ID, AWS_DEFAULT_REGION,",
        "2. Run a pipeline with the variable BULK_MIGRATE=true.",
        "# Where pip finds ecrcopy",
        '- if: $BULK_MIGRATE == "true"',
    ):
        assert kept in text
    assert "$[[" not in text


def test_the_docs_list_every_input_with_its_type_and_default(component: Component) -> None:
    docs = (ROOT / "docs" / "ci-component.md").read_text(encoding="utf-8")
    rows = {m[1]: m[0] for m in re.finditer(r"^\| `([a-z_]+)` \|.*$", docs, re.MULTILINE)}
    assert set(rows) == set(component.inputs)
    for name, spec in component.inputs.items():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", rows[name].strip("|"))]
        assert cells[1] == f"`{spec.type}`", name
        assert cells[2] == (f"`{ruby_to_s(spec.default)}`" if spec.default != "" else "empty"), name
        if spec.options:
            assert all(f"`{o}`" in cells[3] for o in spec.options), name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Components" in readme and "docs/ci-component.md" in readme


def test_the_projects_pipeline_tests_the_component_and_releases_on_tags(component: Component) -> None:
    pipeline = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text(encoding="utf-8"))
    jobs = jobs_of(pipeline)
    assert any(".ci/run" in line for job in jobs.values() for line in job.get("script", []))
    releases = [job for job in jobs.values() if "release" in job]
    assert len(releases) == 1 and releases[0]["rules"][0]["if"].startswith("$CI_COMMIT_TAG")
    assert releases[0]["release"]["tag_name"] == "$CI_COMMIT_TAG"
    [include] = [i for i in pipeline["include"] if "component" in i]
    assert include["component"] == "$CI_SERVER_FQDN/$CI_PROJECT_PATH/migrate-ecr@$CI_COMMIT_SHA"
    included = jobs_of(interpolate_component(component, include.get("inputs", {})))
    validate_jobs({**jobs, **included}, [".pre", *pipeline["stages"], ".post"])  # GitLab adds .pre, .post


# -- the jobs, run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    repository: str
    obj: Image | Index
    tags: tuple[str, ...]


def catalogue() -> list[Seeded]:
    """Six repositories; a multi-arch OCI index, Docker and OCI images sharing base layers, a repository
    three levels deep, a signature; two repositories and one tag that the selection leaves out."""
    base_amd64, base_arm64 = Blob.generated(48 * KiB, seed=1), Blob.generated(48 * KiB, seed=2)

    def amd64(*layers: Blob | int, seed: int) -> Image:
        return oci_image([base_amd64, *layers], seed=seed, platform="linux/amd64")

    def arm64(*layers: Blob | int, seed: int) -> Image:
        return oci_image([base_arm64, *layers], seed=seed, platform="linux/arm64")

    def docker(*layers: Blob | int, seed: int) -> Image:
        return docker_image([base_amd64.with_media_type(DOCKER_LAYER), *layers], seed=seed)

    web = oci_index([amd64(12 * KiB, seed=30), arm64(12 * KiB, seed=31)])
    return [
        Seeded("platform/base", oci_index([amd64(seed=10), arm64(seed=11)]), ("12", "latest")),
        Seeded("shop/api", docker(8 * KiB, seed=20), ("v1.0",)),
        Seeded("shop/api", docker(9 * KiB, seed=21), ("v1.1",)),
        Seeded("shop/api", docker(7 * KiB, seed=22), ("dev-7",)),  # not selected by the tags input
        Seeded("shop/web", web, ("v2",)),
        Seeded("shop/web", oci_artifact(web, payload=b"signature of shop/web:v2"), ()),
        Seeded("team/backend/worker", amd64(10 * KiB, seed=40), ("v3",)),
        Seeded("shop/old-cron", amd64(4 * KiB, seed=50), ("v0.1",)),  # excluded
        Seeded("other/tool", amd64(4 * KiB, seed=60), ("v1",)),  # not included
    ]


#: The selection as a user would write it: the regular expressions hold | ( ) $ ^ \ * and +.
SELECTION = {
    "include": "^(platform|shop|team)/.+$",
    "exclude": "shop/old-.*",
    "tags": r"v[0-9]+(\.[0-9]+)*|latest|12",
}
EXPECTED = {  # destination path below the project -> tags
    "platform/base": ["12", "latest"],
    "shop/api": ["v1.0", "v1.1"],
    "shop/web": ["v2"],
    "team/backend-worker": ["v3"],
}
NOT_COPIED = ("shop/old-cron", "other/tool")


@dataclass
class Job:
    name: str
    definition: dict[str, Any]
    workdir: Path
    env: dict[str, str]
    returncode: int | None = None
    log: str = ""

    def artifacts(self) -> dict[str, list[Path]]:
        """Each declared artifact (``paths`` and ``reports:junit``) → the files it names in the workdir."""
        artifacts = self.definition.get("artifacts") or {}
        junit = (artifacts.get("reports") or {}).get("junit") or []
        found = {}
        for pattern in [*artifacts.get("paths", []), *([junit] if isinstance(junit, str) else junit)]:
            expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m[1], ""), pattern)  # the runner expands
            if expanded.endswith("/"):
                files = sorted(p for p in (self.workdir / expanded).rglob("*") if p.is_file())
            else:
                files = sorted(p for p in self.workdir.glob(expanded) if p.is_file())
            found[pattern] = [p.relative_to(self.workdir) for p in files]
        return found


def job_variables(job: Mapping[str, Any]) -> dict[str, str]:
    """A job's ``variables:``: ``expand: false`` ones verbatim; the others must not refer to variables
    (GitLab's expansion of ``$VAR`` in values is not emulated)."""
    values = {}
    for name, value in (job.get("variables") or {}).items():
        raw, expand = (
            (str(value["value"]), value.get("expand", True)) if isinstance(value, dict) else (str(value), True)
        )
        if expand and "$" in raw:
            raise NotEmulated(f"expansion of variables in {name}={raw!r}")
        values[name] = raw
    return values


@dataclass(frozen=True)
class Runner:
    """What a GitLab runner gives each job: a fresh "image" (virtual environment), the CI variables,
    and a network where pip finds nothing but what the test serves on 127.0.0.1."""

    work: Path
    deps: Path
    base_env: dict[str, str]

    def image(self, name: str) -> Path:
        """A fresh virtual environment with pip (the test environment's, as the console script pip's
        wheel installs) and the dependencies of ecrcopy visible through a ``.pth`` file; no ecrcopy."""
        venv = self.work / "images" / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        site = next((venv / "lib").glob("python*/site-packages"))
        (site / "ecrcopy-test-dependencies.pth").write_text(f"{self.deps}\n")
        pip = venv / "bin" / "pip"
        pip.write_text(f"#!{venv}/bin/python\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n")
        pip.chmod(0o755)
        return venv

    def job(self, name: str, definition: dict[str, Any], **ci: str) -> Job:
        extra = set(definition) - RUNNER_KEYS - {"needs"}
        assert not extra, f"the test runner does not emulate {sorted(extra)}"
        slug = re.sub(r"\W+", "-", name)
        workdir = self.work / "jobs" / slug / "project"
        workdir.mkdir(parents=True)
        venv = self.image(slug)
        env = {
            **self.base_env,
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(workdir.parent / "home"),
            "XDG_CACHE_HOME": str(workdir.parent / "cache"),  # a fresh container: no blob location cache
            "CI_PROJECT_DIR": str(workdir),
            "CI_JOB_NAME": name,
            "CI_JOB_STAGE": str(definition["stage"]),
            **ci,
            **job_variables(definition),
        }
        return Job(name, definition, workdir, env)

    def run(self, jobs: Sequence[Job]) -> None:
        """Run ``jobs`` at the same time (as the runner runs the jobs of ``parallel:``)."""
        procs = []
        for job in jobs:
            lines = [*_lines(job.definition.get("before_script")), *_lines(job.definition["script"])]
            script = "set -eo pipefail\n" + "".join(f"printf '%s\\n' {shlex.quote('$ ' + ln)}\n{ln}\n" for ln in lines)
            path = job.workdir.parent / "script.sh"
            path.write_text(script)
            procs.append(
                subprocess.Popen(
                    ["bash", "--noprofile", "--norc", str(path)],
                    cwd=job.workdir,
                    env=job.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for job, proc in zip(jobs, procs, strict=True):
            try:
                job.log, _ = proc.communicate(timeout=JOB_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                job.log, _ = proc.communicate()
                pytest.fail(f"{job.name} did not finish within {JOB_TIMEOUT:.0f} s:\n{job.log[-3000:]}")
            job.returncode = proc.returncode
            (job.workdir.parent / "job.log").write_text(job.log)  # beside the project dir, for a failing test

    @staticmethod
    def download(artifacts_of: Sequence[Job], into: Job) -> None:
        """GitLab passes the ``artifacts:paths`` of needed jobs to the job that needs them."""
        for job in artifacts_of:
            paths = job.definition["artifacts"]["paths"]
            for pattern, files in job.artifacts().items():
                if pattern not in paths:
                    continue  # reports:junit are not passed on
                for file in files:
                    target = into.workdir / file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes((job.workdir / file).read_bytes())


def _lines(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("component-dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(dist.glob("ecrcopy-*.whl"))


@pytest.fixture(scope="module")
def deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dependencies_dir(tmp_path_factory.mktemp("component-deps") / "site")


@dataclass
class Pipeline:
    ecr: EcrEmulator
    gitlab: GitLabEmulator
    runner: Runner
    seeded: list[Seeded]

    def jobs(self, inputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        config = interpolate_component(load_component(), inputs)
        jobs = jobs_of(config)
        validate_jobs(jobs)
        variables = {"BULK_MIGRATE": "true", "CI_PIPELINE_SOURCE": "web"}
        assert added_jobs(config, variables) == {MIGRATE: "on_success", VERIFY: "always"}
        return jobs

    def migrate(self, definition: dict[str, Any]) -> list[Job]:
        total = definition["parallel"]
        shards = [
            self.runner.job(f"{MIGRATE} {i}/{total}", definition, CI_NODE_INDEX=str(i), CI_NODE_TOTAL=str(total))
            for i in range(1, total + 1)
        ]
        self.runner.run(shards)
        return shards

    def verify(self, definition: dict[str, Any], shards: Sequence[Job]) -> Job:
        job = self.runner.job(VERIFY, definition)
        self.runner.download(shards, job)
        self.runner.run([job])
        return job


@pytest.fixture
def pipeline(tmp_path: Path, deps: Path) -> Iterator[Pipeline]:
    with (
        EcrEmulator(tmp_path / "ecr") as ecr,
        GitLabEmulator(tmp_path / "gitlab", project_path=PROJECT) as gitlab,
    ):
        seeded = catalogue()
        for item in seeded:
            ecr.add_image(item.repository, item.obj, list(item.tags))
        (tmp_path / "docker-config").mkdir()
        base = {
            **ci_env(ecr, gitlab, tmp_path / "docker-config"),
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_PIPELINE_SOURCE": "web",
            "BULK_MIGRATE": "true",
            "LANG": "C.UTF-8",
            "PIP_NO_INDEX": "1",  # the job's network: only 127.0.0.1
        }
        yield Pipeline(ecr, gitlab, Runner(tmp_path, deps, base), seeded)


def assert_succeeded(job: Job) -> None:
    assert job.returncode == 0, f"{job.name} exited {job.returncode}:\n{job.log[-4000:]}"


def assert_artifacts_exist(job: Job) -> None:
    for pattern, files in job.artifacts().items():
        assert files, f"{job.name}: the artifact {pattern!r} matches no file"


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_two_parallel_migrate_jobs_and_the_verify_job_move_and_prove_the_selection(
    pipeline: Pipeline, wheel: Path
) -> None:
    inputs = {
        "parallel": 2,
        "install": str(wheel),
        **SELECTION,
        "args": "--concurrency 2",
        "migrate_args": "--shard-wait 60",
    }
    jobs = pipeline.jobs(inputs)
    shards = pipeline.migrate(jobs[MIGRATE])
    for shard in shards:
        assert_succeeded(shard)
        assert f"ecrcopy {ecrcopy.__version__}" in shard.log  # installed by the job's own pip line
        assert_artifacts_exist(shard)
        index = shard.env["CI_NODE_INDEX"]
        assert {str(p) for files in shard.artifacts().values() for p in files} == {
            f"ecrcopy-reports/ecrcopy-report-{index}.json",
            f"ecrcopy-reports/ecrcopy-junit-{index}.xml",
            f"ecrcopy-reports/ecrcopy-report-{index}.html",
        }
    where = subprocess.run(
        ["python", "-c", "import ecrcopy; print(ecrcopy.__file__)"],
        cwd=shards[0].workdir,
        env=shards[0].env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(pipeline.runner.work / "images"), where  # the wheel's, not the tree's

    # what arrived at GitLab: exactly the selection, byte-identical
    gl = pipeline.gitlab
    for path, tags in EXPECTED.items():
        found = list_tags(gl.registry_url, f"{PROJECT}/{path}", auth=gl.credentials)
        assert sorted(t for t in found if not t.startswith("sha256-")) == tags, path
    for item in pipeline.seeded:
        for tag in item.tags:
            if item.repository in NOT_COPIED or tag == "dev-7":
                continue
            destination = f"{PROJECT}/{item.repository.replace('backend/', 'backend-')}"
            raw = fetch_manifest(gl.registry_url, destination, tag, auth=gl.credentials)[0]
            assert raw == item.obj.raw, f"{destination}:{tag}"
    for repository in NOT_COPIED:
        assert list_tags(gl.registry_url, f"{PROJECT}/{repository}", auth=gl.credentials) == []

    # the shards split the work
    reports = [read_json(s.workdir / f"ecrcopy-reports/ecrcopy-report-{s.env['CI_NODE_INDEX']}.json") for s in shards]
    sources = [{i["source"].split("@")[0] for i in r["images"]} for r in reports]
    assert all(sources) and not sources[0] & sources[1]
    assert sum(len(s) for s in sources) == sum(len(t) for t in EXPECTED.values())

    verify = pipeline.verify(jobs[VERIFY], shards)
    assert_succeeded(verify)
    assert_artifacts_exist(verify)
    checked = read_json(verify.workdir / "ecrcopy-verify.json")
    assert checked["ok"] is True and checked["deep"] is True
    assert checked["totals"]["identical"] == sum(len(t) for t in EXPECTED.values())
    assert checked["plan"]["shard"] == "1/1"

    merged = read_json(verify.workdir / "ecrcopy-report.json")
    for total in ("images", "copied", "skipped", "failed", "blobs_uploaded", "blobs_mounted", "bytes_uploaded"):
        assert merged["totals"][total] == sum(r["totals"][total] for r in reports), total
    assert merged["totals"]["failed"] == 0 and merged["totals"]["images"] == len(merged["images"])
    assert merged["verification"]["totals"]["identical"] == checked["totals"]["identical"]
    assert merged["plan"]["repositories"] == len(EXPECTED)
    page = (verify.workdir / "ecrcopy-report.html").read_text(encoding="utf-8")
    assert all(f"{PROJECT}/{path}" in page for path in EXPECTED)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def wheel_url(wheel: Path) -> Iterator[str]:
    """The wheel on an HTTP server on 127.0.0.1: how a job installs ecrcopy before it is on an index."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(wheel.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{wheel.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_verify_job_fails_on_an_image_missing_at_gitlab_and_still_publishes_the_merged_page(
    pipeline: Pipeline, wheel_url: str
) -> None:
    inputs = {"parallel": 2, "install": wheel_url, **SELECTION, "deep": False, "migrate_args": "--shard-wait 60"}
    jobs = pipeline.jobs(inputs)
    shards = pipeline.migrate(jobs[MIGRATE])
    for shard in shards:
        assert_succeeded(shard)
    # pushed to ECR after the migration jobs: selected (include and tags match), not at GitLab
    late = oci_image([Blob.generated(6 * KiB, seed=70)], seed=71)
    pipeline.ecr.add_image("shop/api", late, ["v1.2"])

    verify = pipeline.verify(jobs[VERIFY], shards)
    assert verify.returncode == 1, verify.log[-4000:]  # verify's status, kept past the merge line
    assert '$ exit "$verify_status"' in verify.log and "merged 3 reports into" in verify.log
    assert_artifacts_exist(verify)
    checked = read_json(verify.workdir / "ecrcopy-verify.json")
    missing = [i for i in checked["images"] if i["status"] != "identical"]
    assert [(i["status"], i["destination"]) for i in missing] == [
        ("missing", f"{pipeline.gitlab.image_prefix}/shop/api:v1.2")
    ]
    merged = read_json(verify.workdir / "ecrcopy-report.json")
    assert merged["verification"]["ok"] is False
    assert merged["verification"]["totals"]["missing"] == 1
    page = (verify.workdir / "ecrcopy-report.html").read_text(encoding="utf-8")
    assert "shop/api:v1.2" in page
