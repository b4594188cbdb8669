# Everything a fresh machine needs is set up by the targets themselves.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check --root-user-action=ignore
DIST_DIR ?= dist
DIST_ARCHES ?= x86_64 aarch64
# What `npm ci` leaves in js-client/node_modules: targets that need the packages depend on it.
JS_MODULES = js-client/node_modules/.package-lock.json

.PHONY: help install installed docker volumes node system postgres zig agent dist image schema lint contracts typecheck check pytest pytest-unit pytest-service pytest-docker pytest-hostile coverage js-install js-lint js-unit js-integration js-test docs docs-install test demo clean bench-images bench-streams bench-executor bench-market dashboard-assets bench-observe bench-hubs bench-connect

help:
	@echo "make demo   - start a hub and two providers, push the example job's image to the hub, run the job on it, stop everything"
	@echo "make check  - ruff, the import contracts, mypy --strict, the js-client's tsc and eslint, and the unit tests of both languages (under a minute)"
	@echo "make test   - install what is missing, then make check, every other tier of tests in both languages, and the docs built strict"
	@echo "make agent  - build agent/build/kiln-agent, the static PID 1 of task containers, for this machine (zig cc)"
	@echo "make dist   - build into dist/ the sdist and a platform wheel per architecture (x86_64, aarch64), each with its agent"
	@echo "make schema - regenerate protocol/v1/schema.json from the models, and the js-client's validators and types from it"
	@echo "make docs   - build the documentation site into site/ with mkdocs build --strict (then: mkdocs serve)"
	@echo "make bench-images  - an image of 200 MiB pushed from the engine and loaded by a provider, against docker save + load"
	@echo "make bench-executor - trivial tasks a second on 16 simulated providers, and a requestor's memory over a generator of 1,000,000 items"
	@echo "make bench-streams - a command's output streamed through the hub, against a pipe inside its container"
	@echo "make bench-market  - a rent with a price cap and strategy=cheapest at 10,000 simulated priced providers"
	@echo "make dashboard-assets - copy uPlot (js-client devDependency, pinned) into the hub's dashboard (python/kiln/hub/dashboard/vendor)"
	@echo "make bench-observe - rents at 10,000 simulated providers while /metrics is scraped every second; the hub's memory"
	@echo "make bench-hubs    - several hubs on one PostgreSQL: the relay's cost, 3 hubs x 10,000 simulated providers, a hub SIGKILLed"
	@echo "make bench-connect - a file through act.connect against download_file on one activity, and a 1-byte round trip through a connection"

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[test]'

# Docker's engine (started when not running) and busybox, which the test image is made of.
docker:
	scripts/ensure-docker.sh

# What a provider needs beside Docker: e2fsprogs, mount and loop devices for its volumes.
volumes:
	scripts/ensure-volumes.sh

# Node.js >= 20 and npm, for js-client.
node:
	scripts/ensure-node.sh

# What only the tests use: chromium, docker-registry, openssl.
system:
	scripts/ensure-system.sh

# Debian's PostgreSQL, whose initdb and pg_ctl the tests run to start servers of their own.
postgres:
	scripts/ensure-postgres.sh

# The agent's C compiler: Zig's `cc` from PyPI (python -m ziglang). It cross-compiles the static
# musl binary for x86_64 and aarch64 with no system package; agent/compile.py says more and
# names the version (the wheel's build hook asks for the same).
zig:
	$(PYTHON) -m pip install $(PIP_FLAGS) "$$($(PYTHON) agent/compile.py --requirement)"

# The agent every task container runs as PID 1: a static binary for this machine.
agent: agent/build/kiln-agent

agent/build/kiln-agent: agent/kiln-agent.c agent/compile.py | zig
	$(PYTHON) agent/compile.py -o $@

# Each wheel is built from the sdist (which so must hold all a wheel needs), in an isolated
# environment that the build front end fills from pyproject.toml (hatchling, ziglang);
# hatch_build.py compiles the agent for $KILN_AGENT_ARCH and tags the wheel for it.
dist:
	$(PYTHON) -m pip install $(PIP_FLAGS) 'build>=1.6'
	rm -rf $(DIST_DIR)
	$(PYTHON) -m build --sdist --outdir $(DIST_DIR) .
	for arch in $(DIST_ARCHES); do \
		KILN_AGENT_ARCH=$$arch $(PYTHON) -m build --wheel --outdir $(DIST_DIR) $(DIST_DIR)/kiln-*.tar.gz || exit 1; \
	done

image: install docker
	$(PYTHON) -m kiln.cli image busybox

schema: $(JS_MODULES)
	$(PYTHON) -m kiln.protocol.schema > protocol/v1/schema.json
	cd js-client && npm run --silent generate

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# The layering contract (pyproject.toml, [tool.importlinter]): imports run one way between roles.
contracts:
	$(PYTHON) -c "from importlinter.cli import lint_imports_command as main; main()" --no-cache

typecheck:
	$(PYTHON) -m mypy

# The tests come in tiers, one folder each (docs/development/tests.md); each tier runs once.
#   tests/unit     one process, no network, no real time (tests/unit/conftest.py holds it to that)
#   tests/service  real hubs, processes and sockets; no Docker
#   tests/docker   the Docker engine, provider processes, containers, builds of the agent and the packages
#   tests/hostile  fuzz, chaos, adversaries, tenants, bounds (some with Docker)
# The coverage of the pure modules is gathered across the unit tier (which starts it afresh), the
# service and the hostile tiers (where the hub's core runs in the test's process too), and checked
# against its floor (pyproject.toml) by `make coverage`.
# The tiers of real processes run on PYTEST_WORKERS pytest-xdist workers, a file to each (so a
# module's fixtures are made once), the files marked `long` first (tests/conftest.py). Much of
# their time goes to waiting for processes and containers to start: three workers on two cores
# take half to two thirds as long as one (docs/development/tests.md).
pytest: pytest-unit pytest-service pytest-docker pytest-hostile

COVERAGE_ARGS = --cov --cov-report= --cov-fail-under=0
PYTEST_WORKERS ?= 3
# -p no:benchmark: pytest-benchmark, where something else installed it, warns under xdist (an error here).
PARALLEL_ARGS = -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -p no:benchmark

pytest-unit:
	$(PYTHON) -m pytest tests/unit $(COVERAGE_ARGS)

pytest-service: system postgres agent
	$(PYTHON) -m pytest tests/service $(PARALLEL_ARGS) $(COVERAGE_ARGS) --cov-append

# $(JS_MODULES): the docs' blocks run the tutorials' Node code against the tree's js-client.
pytest-docker: docker volumes node system postgres agent $(JS_MODULES)
	$(PYTHON) -m pytest tests/docker $(PARALLEL_ARGS)

pytest-hostile: docker volumes system postgres agent
	$(PYTHON) -m pytest tests/hostile $(PARALLEL_ARGS) $(COVERAGE_ARGS) --cov-append

# What the tiers gathered (run them first: `make pytest`), failing under the floor.
coverage:
	$(PYTHON) -m coverage report --skip-covered

# What a commit needs, in under a minute: lint, contracts, types, and the unit tiers of both languages.
check: installed lint contracts typecheck pytest-unit js-lint js-unit

# `make install`, only when kiln is not installed from this tree yet (what `make check` needs of it).
installed:
	@$(PYTHON) -c "import kiln, pathlib, sys; sys.exit(not pathlib.Path(kiln.__file__).resolve().is_relative_to(pathlib.Path('python').resolve()))" 2>/dev/null || $(MAKE) --no-print-directory install

# node_modules as package-lock.json says (JS_MODULES, above), installed again only when the lock file changes.
$(JS_MODULES): js-client/package-lock.json | node
	cd js-client && npm ci --no-audit --no-fund

js-install: node
	cd js-client && npm ci --no-audit --no-fund

js-lint: $(JS_MODULES)
	cd js-client && npm run --silent typecheck && npm run --silent lint

js-unit: $(JS_MODULES)
	cd js-client && npm run --silent test:unit

js-integration: $(JS_MODULES) image postgres
	cd js-client && PYTHON="$$(command -v $(PYTHON))" npm run --silent test:integration

js-test: js-unit js-integration

# The hub's dashboard draws its charts with uPlot, vendored: the copy in python/kiln/hub/dashboard/vendor
# is committed (the wheel ships it; nothing is fetched at run time) and is what npm brings for the
# version js-client/package.json pins (tests/unit/test_hub_views.py checks they are the same).
DASHBOARD_VENDOR = python/kiln/hub/dashboard/vendor
dashboard-assets: $(JS_MODULES)
	mkdir -p $(DASHBOARD_VENDOR)
	cp js-client/node_modules/uplot/dist/uPlot.iife.min.js js-client/node_modules/uplot/dist/uPlot.min.css $(DASHBOARD_VENDOR)/
	cp js-client/node_modules/uplot/LICENSE $(DASHBOARD_VENDOR)/uPlot.LICENSE

# The documentation site (docs/, mkdocs.yml), strict: a broken link or reference fails. It needs kiln's
# dependencies and the extra `docs` (installed here without reinstalling kiln: the hooks read python/
# from the tree) and TypeDoc, a package of its own in js-client/typedoc.
DOCS_REQUIREMENTS = $(PYTHON) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	print(*p['dependencies'], *p['optional-dependencies']['docs'], sep='\n')"

docs-install: node
	$(DOCS_REQUIREMENTS) | xargs -d '\n' $(PYTHON) -m pip install $(PIP_FLAGS)
	cd js-client/typedoc && npm ci --no-audit --no-fund

# NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2, which says nothing about this build.
docs: docs-install
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

test: install docker volumes node system postgres agent check docs pytest-service pytest-docker pytest-hostile coverage js-integration

demo: image volumes agent
	$(PYTHON) examples/demo.py

# Benchmarks (BENCHMARKS.md): each prints its numbers and ratios and asserts nothing.
bench-images: image volumes agent
	$(PYTHON) benchmarks/images.py --runs 5

bench-executor: install
	$(PYTHON) benchmarks/executor.py

bench-streams: image volumes agent
	$(PYTHON) benchmarks/exec_latency.py --streams-only --stream-runs 5

bench-market: install
	$(PYTHON) benchmarks/market.py

bench-observe: install
	$(PYTHON) benchmarks/observe.py

bench-hubs: install postgres
	$(PYTHON) benchmarks/hubs.py

bench-connect: image volumes agent
	$(PYTHON) benchmarks/connect.py --mb 200 --runs 5

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache out .demo js-client/node_modules js-client/typedoc/node_modules agent/build site $(DIST_DIR)
