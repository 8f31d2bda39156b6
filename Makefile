# One command for the demo, one for the tests; both bootstrap what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-python test-js test-js-run test-autobahn test-versions lint typecheck bench bootstrap clean

bootstrap: $(STAMP) tests/js/node_modules/.installed examples/chat/node_modules/.installed

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

examples/chat/node_modules/.installed: examples/chat/package.json examples/chat/package-lock.json
	cd examples/chat && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: bootstrap
	$(PY) -m phoenix_channels serve examples.chat.app:endpoint --host 127.0.0.1 --port 4000

# The whole run needs nothing from the machine: tests/services.py installs
# redis-server, nats-server and Chromium when missing (as root) and starts a
# private Redis and NATS on free ports for pytest and the Node suites.
test: bootstrap
	$(PY) -m tests.services -- $(MAKE) --no-print-directory test-python test-js test-autobahn

test-python: $(STAMP)
	$(PY) -m pytest -q

# The wire suite runs once per transport. The cluster and presence suites run
# over WebSocket only: what they test does not depend on the transport, and a
# long-poll client that goes away is only noticed after the poll window.
JS_LONGPOLL := $(filter-out tests/js/cluster.test.mjs tests/js/presence.test.mjs,$(wildcard tests/js/*.test.mjs))

test-js: $(STAMP) tests/js/node_modules/.installed
	$(PY) -m tests.services -- $(MAKE) --no-print-directory test-js-run

test-js-run:
	PHX_PYTHON=$(abspath $(PY)) PHX_TRANSPORT=websocket node --test tests/js/
	PHX_PYTHON=$(abspath $(PY)) PHX_TRANSPORT=longpoll node --test $(JS_LONGPOLL)

# RFC 6455 conformance (Autobahn|Testsuite) of the fast path; installs the suite
# (Python 2.7) under tests/autobahn/.venv on first use. AUTOBAHN=--all for every case.
test-autobahn: $(STAMP)
	$(PY) -m tests.autobahn.run $(AUTOBAHN)

# The core suites on every other supported Python (3.11 is .venv's): one venv per
# version (.venv-3.12, .venv-3.13), found in pyenv or on PATH as pythonX.Y.
PYTHON_VERSIONS ?= 3.12 3.13
CORE_TESTS := tests/protocol tests/test_channel.py tests/test_socket.py tests/test_endpoint.py tests/transports tests/client/test_core.py \
	tests/test_typed.py tests/test_eager.py tests/test_exports.py tests/apps/test_publisher.py

test-versions:
	@set -e; for v in $(PYTHON_VERSIONS); do \
	  py=$$(ls -d $$HOME/.pyenv/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -n 1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v) || { echo "Python $$v not found (pyenv, or python$$v on PATH)"; exit 1; }; \
	  if [ ! .venv-$$v/.installed -nt pyproject.toml ]; then \
	    echo "== creating .venv-$$v with $$py"; \
	    $$py -m venv .venv-$$v; \
	    .venv-$$v/bin/python -m pip install --quiet --upgrade pip; \
	    .venv-$$v/bin/python -m pip install --quiet -e '.[dev]'; \
	    touch .venv-$$v/.installed; \
	  fi; \
	  echo "== Python $$v: $(CORE_TESTS)"; \
	  .venv-$$v/bin/python -m pytest -q -p no:randomly $(CORE_TESTS); \
	done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(PY) tools/check_imports.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: bootstrap
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .venv-3.* tests/js/node_modules examples/chat/node_modules
