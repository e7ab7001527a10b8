# Developer entry points. `make demo` and `make test` set everything up themselves (.ci/setup).
.DEFAULT_GOAL := help
.PHONY: help setup demo test lint examples docs-screenshot

PYTHON := .venv/bin/python
PYTEST_ARGS ?=

help:
	@echo "make demo    migrate a local ECR emulation to a local GitLab registry with the real CLI (< 1 min)"
	@echo "make test    run the test suite (extra pytest arguments: PYTEST_ARGS='-k mount -x')"
	@echo "make lint    ruff check, ruff format --check, mypy --strict"
	@echo "make examples  write docs/examples/gitlab-ci.yml from the CI/CD component templates/migrate-ecr.yml"
	@echo "make docs-screenshot  remake docs/images/html-report.png (headless Chromium, from the HTML report test)"

setup:
	@.ci/setup

demo:
	@.ci/setup
	$(PYTHON) -m ecrcopy.testing.demo

test:
	@.ci/setup --test
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	@.ci/setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

examples:
	@.ci/setup
	$(PYTHON) -m tests._gitlab_ci examples

docs-screenshot:
	@.ci/setup --test
	ECRCOPY_UPDATE_DOCS_SCREENSHOT=1 $(PYTHON) -m pytest -q -p no:randomly tests/test_html_report.py -k chromium_renders
