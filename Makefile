# The test run CI makes (.ci/run calls `make test`), and the lockfiles it installs from.
#
#   make test   a fresh .venv from requirements-test.txt (hash-checked), the project
#               installed into it without resolving anything, then ruff (lint, and a
#               check that every file is as `ruff format` leaves it) and pytest on
#               two xdist workers (each with its own database and Redis db:
#               tests/conftest.py; tests grouped with xdist_group run on one worker)
#   make lock   regenerate requirements.txt (the image's runtime set) and
#               requirements-test.txt (runtime plus the test extra) from pyproject.toml;
#               pins already in them are kept unless `make lock UPGRADE=--upgrade`

PYTHON ?= python3
VENV := .venv
UPGRADE ?=
# Any platform, the oldest Python the project supports, every file's hash.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes $(UPGRADE)

.PHONY: test venv lock

# The venv's bin first, as `activate` does: tests start the Procfile's commands (webhooks,
# celery, gunicorn) by name.
test: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ruff check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ruff format --check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python -m pytest -q -n 2 --dist loadgroup

venv:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --require-hashes -r requirements-test.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e .

lock:
	uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements.txt
	uv pip compile pyproject.toml --extra test $(LOCK_FLAGS) -o requirements-test.txt
