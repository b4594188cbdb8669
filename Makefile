# Everything a fresh machine needs is set up by the targets themselves.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: help install docker image schema lint typecheck pytest test demo clean

help:
	@echo "make demo   - start a hub and two providers, run the example job, stop everything"
	@echo "make test   - install what is missing, then ruff, mypy --strict and pytest"
	@echo "make schema - regenerate protocol/v1/schema.json from the models"

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[test]'

docker:
	scripts/ensure-docker.sh

image: install docker
	$(PYTHON) -m kiln.cli image busybox

schema:
	$(PYTHON) -m kiln.protocol.schema > protocol/v1/schema.json

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest

test: install docker lint typecheck pytest

demo: image
	$(PYTHON) examples/demo.py

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache out .demo
