"""What GitLab does with a CI/CD component before a runner sees it, emulated for the tests. Pure, no I/O
except reading the component file.

Modelled on GitLab's own code and documentation (``doc/ci/inputs``, ``doc/ci/yaml``, and
``lib/gitlab/ci/config/interpolation``, ``header`` and ``entry/artifacts.rb``):

- :func:`load_component`: a component file is two YAML documents, the ``spec:`` header and the
  configuration; the header's inputs are checked as GitLab checks them (allowed keys, types,
  options).
- :func:`resolve_inputs`: the values given in ``include: inputs:`` against the specs: an unknown
  input, a missing required one, a wrong type, a value outside ``options:``, a ``regex:`` that does
  not match -- each an error, worded as GitLab words it. Defaults fill in the rest.
- :func:`interpolate`: ``$[[ inputs.x ]]`` blocks, in keys and values. A YAML scalar that is exactly
  one block takes the input's value with its type (a number stays a number); blocks inside a longer
  string become text (Ruby's ``to_s``: ``true``, ``4``), replaced the way Ruby's ``gsub`` does
  (backslash sequences in the value are read as back-references). A string item of a list that
  becomes a list is spliced in. Input functions (``| posix_escape`` ...) are not emulated: the
  component does not use them, and :class:`NotEmulated` says so if it ever does.
- :func:`added_jobs` / :func:`evaluate_if`: which jobs ``rules:`` adds to a pipeline, for the
  ``if:`` expressions built from ``$VAR``, ``"string"``, ``null``, ``==``, ``!=``, ``&&``, ``||`` and
  parentheses (``=~`` is not emulated).
- :func:`validate_jobs`: the job-level checks the component's output must pass: ``stage`` exists,
  ``parallel`` 1..200, ``needs`` a job of an earlier stage, and ``artifacts:expose_as`` (its name,
  ``paths`` present and without ``*``).
- :func:`render_example`: the component as a plain ``.gitlab-ci.yml`` with the default inputs written
  in, comments kept (``make examples`` writes ``docs/examples/gitlab-ci.yml`` with it).

Known gaps: GitLab matches ``regex:`` with RE2, this uses Python's ``re.search`` (the same for the
patterns the component uses; RE2's ``$`` does not match before a trailing newline); YAML is read with
PyYAML (YAML 1.1, like GitLab's Psych for everything the component contains).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_STAGES",
    "MISSING",
    "Component",
    "ComponentError",
    "InputSpec",
    "NotEmulated",
    "added_jobs",
    "evaluate_if",
    "interpolate",
    "interpolate_component",
    "jobs_of",
    "load_component",
    "render_example",
    "resolve_inputs",
    "ruby_to_s",
    "validate_jobs",
]

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "migrate-ecr.yml"
EXAMPLE = ROOT / "docs" / "examples" / "gitlab-ci.yml"

#: A pipeline's stages when ``.gitlab-ci.yml`` does not list its own.
DEFAULT_STAGES = (".pre", "build", "test", "deploy", ".post")
INPUT_TYPES = ("array", "boolean", "number", "string")  # Interpolation::Inputs::TYPES
INPUT_KEYS = ("default", "description", "options", "regex", "type")  # Header::Input::ALLOWED_KEYS
MAX_OPTIONS = 50
MAX_FUNCTIONS = 3
MAX_ACCESS_OBJECTS = 5
MAX_ACCESS_BYTESIZE = 1024
#: Template::BLOCK_REGEXP; RE2's ``.`` does not match a newline, nor does Python's.
BLOCK = re.compile(r"\$\[\[\s*(?P<data>\S.*?\S)\s*\]\]")
#: GitLab's predefined interpolation functions (doc/ci/inputs: "Predefined interpolation functions").
GITLAB_FUNCTIONS = ("expand_vars", "truncate", "posix_escape")
EXPOSE_AS = re.compile(r"\A\w[-\w ]*\Z")  # Entry::Artifacts::EXPOSE_AS_REGEX
PARALLEL_LIMIT = 200
#: Top-level keys that are not jobs (doc/ci/yaml: global keywords).
GLOBAL_KEYS = frozenset({"default", "include", "stages", "variables", "workflow", "image", "services", "cache"})


class ComponentError(Exception):
    """GitLab would refuse the configuration; ``errors`` are its messages, ``str()`` the first three
    joined as GitLab shows them (``Interpolator#error_message``)."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__(", ".join(self.errors[:3]))


class NotEmulated(Exception):
    """Valid GitLab configuration that this emulation does not implement."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: ``default`` of an input without a default (a required input).
MISSING: Any = _Missing()


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str = "string"
    default: Any = MISSING
    description: str | None = None
    options: tuple[Any, ...] | None = None
    regex: str | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING


@dataclass(frozen=True)
class Component:
    """A component file: its inputs (in file order) and its configuration, not yet interpolated."""

    path: Path
    text: str
    inputs: dict[str, InputSpec]
    content: dict[str, Any] = field(repr=False)


# -- the header ----------------------------------------------------------------------------------


def load_component(path: Path = TEMPLATE) -> Component:
    """Read a component file: the ``spec:`` header, ``---``, then the configuration."""
    text = path.read_text(encoding="utf-8")
    documents = list(yaml.safe_load_all(text))
    if len(documents) != 2 or not isinstance(documents[0], dict) or set(documents[0]) != {"spec"}:
        raise ComponentError([f"{path.name}: a component is a `spec:` header, a `---` line, then the configuration"])
    header, content = documents
    if not isinstance(content, dict):
        raise ComponentError([f"{path.name}: the configuration after `---` must be a mapping"])
    return Component(path, text, parse_header(header), content)


def parse_header(header: Mapping[str, Any]) -> dict[str, InputSpec]:
    """``Header::Root``/``Spec``/``Input`` validation: the inputs, or every error GitLab would list."""
    spec = header.get("spec")
    if not isinstance(spec, dict):
        raise ComponentError(["header:spec config should be a hash"])
    errors: list[str] = []
    unknown = [k for k in spec if k != "inputs"]
    if unknown:
        raise NotEmulated(f"header:spec keys {unknown} (only `inputs` is emulated)")
    inputs = spec.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise ComponentError(["header:spec:inputs config should be a hash"])
    specs: dict[str, InputSpec] = {}
    for name, config in inputs.items():
        where = f"header:spec:inputs:{name}"
        config = {} if config is None else config  # `name:` alone: a required string input
        if not isinstance(config, dict):
            errors.append(f"{where} config should be a hash")
            continue
        if "rules" in config:
            raise NotEmulated(f"{where}: spec:inputs:rules")
        extra = [k for k in config if k not in INPUT_KEYS]
        if extra:
            errors.append(f"{where} config contains unknown keys: {', '.join(extra)}")
        kind = config.get("type", "string")
        if kind not in INPUT_TYPES:
            errors.append(f"{where} input type unknown value: {kind}")
        options = config.get("options")
        if options is not None and not isinstance(options, list):
            errors.append(f"{where} input options should be an array")
        elif options is not None and len(options) > MAX_OPTIONS:
            errors.append(f"{where} config cannot define more than {MAX_OPTIONS} options")
        regex = config.get("regex")
        if regex is not None and not isinstance(regex, str):
            errors.append(f"{where} input regex should be a string")
        description = config.get("description")
        if description is not None and not isinstance(description, str | int):
            errors.append(f"{where} input description should be a string or symbol")
        specs[str(name)] = InputSpec(
            name=str(name),
            type=str(kind),
            default=config.get("default", MISSING),
            description=description,
            options=tuple(options) if isinstance(options, list) else None,
            regex=regex if isinstance(regex, str) else None,
        )
    if errors:
        raise ComponentError(errors)
    return specs


# -- input values --------------------------------------------------------------------------------


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":  # Ruby's Numeric; a Ruby boolean is not one
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, list)


def _check(spec: InputSpec, value: Any, *, default: bool) -> list[str]:
    """``BaseInput#run_validations``: type, options, regex (each input type's own wording)."""
    which = "default" if default else "provided"
    errors = []
    if not _type_ok(spec.type, value):
        errors.append(f"{which} value is not a{'n' if spec.type == 'array' else ''} {spec.type}")
    if spec.options is not None:
        if spec.type == "string":
            if value not in spec.options:
                errors.append(f"`{ruby_to_s(value)}` cannot be used because it is not in the list of allowed options")
        elif spec.type == "number":
            if value not in spec.options or isinstance(value, bool):
                errors.append(
                    f"`{ruby_to_s(value)}` cannot be used because it is not in the list of the allowed options"
                )
        else:
            errors.append("Options can only be used with string and number inputs")
    if spec.regex is not None:
        if spec.type != "string":
            errors.append("RegEx validation can only be used with string inputs")
        elif isinstance(value, str):
            try:
                matched = re.search(spec.regex, value) is not None
            except re.error:
                errors.append("invalid regular expression")
            else:
                if not matched:
                    errors.append(f"{which} value does not match required RegEx pattern")
    return [f"`{spec.name}` input: {message}" for message in errors]


def resolve_inputs(specs: Mapping[str, InputSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """``Interpolation::Inputs``: every input's value, or a :class:`ComponentError` with every error."""
    errors = []
    unknown = [name for name in given if name not in specs]
    if unknown:
        errors.append(f"unknown input arguments: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        value = given.get(name)
        if spec.required and value is None:
            errors.append(f"`{name}` input: required value has not been provided")
            continue
        problems = [] if spec.required else _check(spec, spec.default, default=True)
        if value is not None:
            problems += _check(spec, value, default=False)
        errors += problems
        values[name] = spec.default if value is None else value
    if errors:
        raise ComponentError(errors)
    return values


# -- interpolation -------------------------------------------------------------------------------


def ruby_to_s(value: Any) -> str:
    """Ruby's ``to_s`` of a YAML value, as an embedded block is written into a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_ruby_inspect(v) for v in value) + "]"
    raise NotEmulated(f"Ruby's to_s of {type(value).__name__}")


def _ruby_inspect(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "nil"
    return ruby_to_s(value)


def _ruby_gsub(text: str, literal: str, replacement: str) -> str:
    """``text.gsub(literal, replacement)``: Ruby reads ``\\0 \\& \\1..\\9 \\` \\' \\\\ \\k<..>`` in the
    replacement even when the pattern is a plain string (there are no capture groups)."""
    out: list[str] = []
    start = 0
    while (at := text.find(literal, start)) != -1:
        out.append(text[start:at])
        out.append(_ruby_replacement(replacement, text, at, at + len(literal)))
        start = at + len(literal)
    out.append(text[start:])
    return "".join(out)


def _ruby_replacement(replacement: str, text: str, begin: int, end: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(replacement):
        char = replacement[i]
        if char != "\\" or i + 1 == len(replacement):
            out.append(char)
            i += 1
            continue
        nxt = replacement[i + 1]
        if nxt in "0&":
            out.append(text[begin:end])
        elif nxt in "123456789":
            pass  # no such group: empty
        elif nxt == "`":
            out.append(text[:begin])
        elif nxt == "'":
            out.append(text[end:])
        elif nxt == "\\":
            out.append("\\")
        elif nxt == "k" and (close := replacement.find(">", i + 2)) != -1 and replacement[i + 2 : i + 3] == "<":
            i = close + 1  # a named group that does not exist: empty
            continue
        else:
            out.append(char + nxt)
        i += 2
    return "".join(out)


def _block_value(data: str, ctx: Mapping[str, Any]) -> Any:
    """``Interpolation::Block``: the value of ``<access> | <function> ...``."""
    access, *functions = (part.strip() for part in data.split("|"))
    objects = access.split(".", MAX_ACCESS_OBJECTS - 1)
    errors = []
    if len(objects) <= 1:
        errors.append("invalid interpolation access pattern")
    if len(access.encode()) > MAX_ACCESS_BYTESIZE:
        errors.append("maximum interpolation expression size exceeded")
    if errors:
        raise ComponentError(errors)
    value: Any = ctx
    for key in objects:
        if not isinstance(value, dict) or key not in value:
            raise ComponentError([f"unknown interpolation key: `{key}`"])
        value = value[key]
    if len(functions) > MAX_FUNCTIONS:
        raise ComponentError(["too many functions in interpolation block"])
    for function in functions:
        name = function.split("(", 1)[0].strip()
        if name in GITLAB_FUNCTIONS:
            raise NotEmulated(f"the input function `{function}`")
        raise ComponentError(
            [f"no function matching `{function}`: check that the function name, arguments, and types are correct"]
        )
    return value


def _interpolate_string(node: str, ctx: Mapping[str, Any]) -> Any:
    if "$[[" not in node:
        return node
    matches = list(BLOCK.finditer(node))
    if not matches:
        return node
    values = {m.group(0): _block_value(m.group("data"), ctx) for m in matches}
    if len(matches) == 1 and len(node) == len(matches[0].group(0)):
        return values[matches[0].group(0)]  # the whole scalar: the input's own type
    for block, value in values.items():
        node = _ruby_gsub(node, block, ruby_to_s(value))
    return node


def interpolate(node: Any, ctx: Mapping[str, Any]) -> Any:
    """``Interpolation::Config#replace!`` with ``Template``'s block: keys and values, recursively."""
    if isinstance(node, dict):
        return {interpolate(k, ctx): interpolate(v, ctx) for k, v in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            new = interpolate(item, ctx)
            if isinstance(item, str) and isinstance(new, list):
                out.extend(new)  # an array input spliced into the list
            else:
                out.append(new)
        return out
    if isinstance(node, str):
        return _interpolate_string(node, ctx)
    return node


def interpolate_component(component: Component, given: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration GitLab merges into the pipeline for ``include: component`` with ``inputs: given``."""
    values = resolve_inputs(component.inputs, given)
    result: dict[str, Any] = interpolate(component.content, {"inputs": values})
    return result


# -- rules ---------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
      | "(?P<dq>[^"]*)" | '(?P<sq>[^']*)'
      | (?P<null>null\b)
      | (?P<op>==|!=|=~|!~|&&|\|\||\(|\))
    )""",
    re.VERBOSE,
)


def _tokens(expression: str) -> Iterator[tuple[str, Any]]:
    at = 0
    while at < len(expression.rstrip()):
        match = _TOKEN.match(expression, at)
        if match is None:
            raise ComponentError([f"invalid expression syntax: {expression}"])
        at = match.end()
        if match.group("var") is not None:
            yield "value", ("var", match.group("var").strip("${}"))
        elif match.group("dq") is not None or match.group("sq") is not None:
            yield "value", ("str", match.group("dq") if match.group("dq") is not None else match.group("sq"))
        elif match.group("null") is not None:
            yield "value", ("null", None)
        else:
            op = match.group("op")
            if op in ("=~", "!~"):
                raise NotEmulated(f"the operator {op} in rules:if")
            yield "op", op


def evaluate_if(expression: str, variables: Mapping[str, str]) -> bool:
    """A ``rules:if`` expression: ``$VAR`` alone is true when set and not empty; comparisons of
    variables, strings and ``null``; ``&&`` binds tighter than ``||``; parentheses."""
    tokens = list(_tokens(expression))
    position = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal position
        if position >= len(tokens):
            raise ComponentError([f"invalid expression syntax: {expression}"])
        position += 1
        return tokens[position - 1]

    def value_of(term: tuple[str, Any]) -> str | None:
        kind, raw = term
        if kind == "var":
            return variables.get(raw)
        return str(raw) if kind == "str" else None

    def primary() -> bool:
        kind, raw = take()
        if (kind, raw) == ("op", "("):
            result = disjunction()
            if take() != ("op", ")"):
                raise ComponentError([f"invalid expression syntax: {expression}"])
            return result
        if kind != "value":
            raise ComponentError([f"invalid expression syntax: {expression}"])
        nxt = peek()
        if nxt is not None and nxt[1] in ("==", "!="):
            op = take()[1]
            other_kind, other = take()
            if other_kind != "value":
                raise ComponentError([f"invalid expression syntax: {expression}"])
            equal = value_of(raw) == value_of(other)
            return equal if op == "==" else not equal
        return bool(value_of(raw))

    def conjunction() -> bool:
        result = primary()
        while peek() == ("op", "&&"):
            take()
            result = primary() and result
        return result

    def disjunction() -> bool:
        result = conjunction()
        while peek() == ("op", "||"):
            take()
            result = conjunction() or result
        return result

    result = disjunction()
    if position != len(tokens):
        raise ComponentError([f"invalid expression syntax: {expression}"])
    return result


def jobs_of(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The configuration's jobs: top-level mappings that are neither global keywords nor hidden (``.x``)."""
    return {
        name: job
        for name, job in config.items()
        if name not in GLOBAL_KEYS and not name.startswith(".") and isinstance(job, dict)
    }


def added_jobs(config: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    """Job name → its ``when`` for the jobs ``rules:`` adds to a pipeline with ``variables``."""
    added = {}
    for name, job in jobs_of(config).items():
        rules = job.get("rules")
        if rules is None:
            added[name] = str(job.get("when", "on_success"))
            continue
        for rule in rules:
            extra = set(rule) - {"if", "when"}
            if extra:
                raise NotEmulated(f"rules keys {sorted(extra)}")
            if "if" not in rule or evaluate_if(str(rule["if"]), variables):
                if rule.get("when", "on_success") != "never":
                    added[name] = str(rule.get("when", "on_success"))
                break
    return added


# -- job checks ----------------------------------------------------------------------------------


def validate_jobs(jobs: Mapping[str, Mapping[str, Any]], stages: Sequence[str] = DEFAULT_STAGES) -> None:
    """The checks GitLab applies to these keys of the component's jobs (``Entry::Job``, ``Artifacts``,
    ``Product::Parallel``, needs and stages); raises :class:`ComponentError` with every error."""
    errors = []
    for name, job in jobs.items():
        where = f"jobs:{name}"
        stage = job.get("stage", "test")
        if stage not in stages:
            errors.append(f"{name} job: chosen stage {stage} does not exist; available stages are {', '.join(stages)}")
        if "parallel" in job:
            parallel = job["parallel"]
            if not isinstance(parallel, int) or isinstance(parallel, bool):
                errors.append(f"{where}:parallel should be an integer or a hash")
            elif parallel < 1:
                errors.append(f"{where}:parallel config must be greater than or equal to 1")
            elif parallel > PARALLEL_LIMIT:
                errors.append(f"{where}:parallel config must be less than or equal to {PARALLEL_LIMIT}")
        artifacts = job.get("artifacts") or {}
        if artifacts.get("when", "on_success") not in ("on_success", "on_failure", "always"):
            errors.append(f"{where}:artifacts when should be one of: on_success, on_failure, always")
        if "expose_as" in artifacts:
            expose_as = artifacts["expose_as"]
            paths = artifacts.get("paths")
            if not isinstance(expose_as, str) or len(expose_as) > 100:
                errors.append(f"{where}:artifacts expose as should be a string of at most 100 characters")
            elif not EXPOSE_AS.match(expose_as):
                errors.append(f"{where}:artifacts expose as can contain only letters, digits, '-', '_' and spaces")
            if not paths:
                errors.append(f"{where}:artifacts paths can't be blank")
            elif any("*" in path for path in paths):
                errors.append(f"{where}:artifacts paths can't contain '*' when used with 'expose_as'")
        for need in job.get("needs") or ():
            needed = need["job"] if isinstance(need, dict) else need
            if needed not in jobs:
                errors.append(f"'{name}' job needs '{needed}' job, but '{needed}' does not exist in the pipeline")
                continue
            needed_stage = jobs[needed].get("stage", "test")
            if stage in stages and needed_stage in stages and stages.index(needed_stage) > stages.index(stage):
                errors.append(f"'{name}' job needs '{needed}' job, but '{needed}' is not in any previous stage")
    if errors:
        raise ComponentError(errors)


# -- the example for users who cannot include components ------------------------------------------

EXAMPLE_HEADER = """\
# The migrate-ecr CI/CD component (templates/migrate-ecr.yml) with its default inputs written in,
# for a .gitlab-ci.yml that cannot include components. Where you can, include the component
# instead and set inputs (docs/ci-component.md):
#
#   include:
#     - component: $CI_SERVER_FQDN/<group>/ecrcopy/migrate-ecr@<version>
#
# Here the inputs are the values in place: the job names, `parallel: 4`, the image, and the
# MIGRATE_ECR_* variables (MIGRATE_ECR_INSTALL: what pip installs; MIGRATE_ECR_INCLUDE,
# MIGRATE_ECR_EXCLUDE, MIGRATE_ECR_TAGS: regular expressions, empty for none).
# In the ecrcopy repository this file is generated: `make examples` writes it again.
"""


def render_example(component: Component | None = None) -> str:
    """The configuration part of the component file with each block replaced by its default's text.

    Comments stay. The result must load to exactly what :func:`interpolate_component` makes of the
    defaults (each block's value written where it stands); otherwise this raises, so a template whose
    defaults do not survive being written into the YAML text cannot produce a wrong example.
    """
    component = component or load_component()
    lines = component.text.splitlines(keepends=True)
    body = "".join(lines[lines.index("---\n") + 1 :])
    defaults = resolve_inputs(component.inputs, {})
    ctx = {"inputs": defaults}
    text = BLOCK.sub(lambda m: ruby_to_s(_block_value(m.group("data"), ctx)), body)
    example = EXAMPLE_HEADER + "#\n" + text
    if yaml.safe_load(example) != interpolate_component(component, {}):
        raise ValueError(f"{component.path}: the defaults written into the text do not load as GitLab reads them")
    return example


def main(argv: Sequence[str]) -> int:
    """``python -m tests._gitlab_ci examples [--check]``: write (or check) docs/examples/gitlab-ci.yml."""
    if not argv or argv[0] != "examples" or argv[1:] not in ([], ["--check"]):
        print("usage: python -m tests._gitlab_ci examples [--check]", file=sys.stderr)
        return 2
    example = render_example()
    if argv[1:] == ["--check"]:
        current = EXAMPLE.read_text(encoding="utf-8") if EXAMPLE.exists() else ""
        if current != example:
            print(f"{EXAMPLE.relative_to(ROOT)} is out of date: run `make examples`", file=sys.stderr)
            return 1
        return 0
    EXAMPLE.write_text(example, encoding="utf-8")
    print(f"wrote {EXAMPLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
