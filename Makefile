# Thin wrappers over the CLIs. Two commands matter: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian packages the test suite drives for real: openssl (chain checks, s_client), the
# mosquitto clients (standard clients against the gateway) and broker (the bench smoke run's
# peer). postgresql: the PostgreSQL store and cluster tests start their own server from it.
# NODE_DEBS: Node and npm, for MQTT.js (the interop tests install it from npm when missing),
# only when no `node`/`npm` is on PATH (a Node from elsewhere carries its own npm).
TEST_DEBS  := openssl mosquitto-clients mosquitto curl chromium chromium-driver postgresql
NODE_DEBS  := nodejs npm
BENCH_DEBS := openssl mosquitto-clients mosquitto curl postgresql

.PHONY: venv test demo certs lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $@

test: venv
	scripts/ensure-debian-packages $(TEST_DEBS)
	command -v node >/dev/null && command -v npm >/dev/null || \
		scripts/ensure-debian-packages $(NODE_DEBS)
	$(BIN)/python -m pytest

demo: venv
	scripts/ensure-debian-packages $(TEST_DEBS)
	PATH="$(abspath $(BIN)):$$PATH" scripts/demo

certs: venv
	PATH="$(abspath $(BIN)):$$PATH" scripts/demo --certs-only

lint: venv
	$(BIN)/ruff check ca gateway firmware-sim tests bench

bench: venv
	scripts/ensure-debian-packages $(BENCH_DEBS)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
