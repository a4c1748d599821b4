# regsandbox developer tasks. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SANDBOXCTL := $(VENV)/bin/sandboxctl
DEV_DIR ?= .regsandbox/dev
PYTEST_ARGS ?=
# MODE for `make up` and `make demo`: auto (the chart on a local node when the machine
# can host one, else processes), chart, or processes.
MODE ?= auto
# KEY_PROVIDER for `make up`: local, or pkcs11 (a SoftHSM2 token made under the stack dir;
# the components then run as processes).
KEY_PROVIDER ?= local

.PHONY: help venv deps tools up cluster down test test-unit lint lint-rego fmt generate demo bench clean

# Debian packages of the local node (containerd, runc, CNI plugins, iptables, ipset,
# conntrack) and of the locally built images (umoci, skopeo, mmdebstrap, gcc,
# busybox-static), SoftHSM2 (the PKCS#11 key provider's tests) and chromium (the evidence
# report's browser test). `make deps` installs the missing ones with apt, which needs root.
DEB_PACKAGES := containerd runc containernetworking-plugins umoci skopeo mmdebstrap \
	iptables ipset conntrack iproute2 util-linux gcc libc6-dev busybox-static softhsm2 chromium

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(PY)

venv: $(PY) ## Create .venv with regsandbox and its development tools

deps: ## Install the Debian packages the data plane and images need (apt; root only)
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "deps: missing $$missing; install them as root (the data plane also needs root)" >&2; \
	elif ! command -v apt-get >/dev/null; then \
		echo "deps: missing $$missing and no apt-get; install them by other means" >&2; \
	else \
		echo "deps: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing; \
	fi

tools: $(PY) deps ## Build the pinned Go tools that are missing from the cache
	$(SANDBOXCTL) dev tools --build

up: tools ## Run everything locally in the foreground: the chart on a local node (root), else processes (Ctrl-C stops it)
	$(SANDBOXCTL) dev stack --dir .regsandbox/stack --mode $(MODE) --key-provider $(KEY_PROVIDER)

cluster: tools ## Only the control plane, in the foreground (Ctrl-C stops it)
	$(SANDBOXCTL) dev up --dir $(DEV_DIR) --foreground

down: $(PY) ## Stop the local control plane
	$(SANDBOXCTL) dev down --dir $(DEV_DIR)

test: tools ## Run every test, integration tests included
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(PY) ## Run the tests that need no servers
	$(PY) -m pytest -m "not integration and not opa and not s3 and not dataplane" $(PYTEST_ARGS)

lint: $(PY) lint-rego ## ruff (lint + format check), mypy --strict, import contracts (.importlinter), and lint-rego
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# The cached path of a pinned tool binary (built by `sandboxctl dev tools --build`).
TOOL_PATH = $(PY) -c 'import sys; from sandbox.devenv.toolchain import tool_path; print(tool_path(sys.argv[1]))'

lint-rego: $(PY) ## policies/: opa fmt --list --fail, opa check --strict, Regal lint (.regal/config.yaml)
	$(SANDBOXCTL) dev tools --build --name opa --name regal > /dev/null
	opa="$$($(TOOL_PATH) opa)" && regal="$$($(TOOL_PATH) regal)" && \
		"$$opa" fmt --list --fail policies && \
		"$$opa" check --strict policies && \
		"$$regal" lint --config-file .regal/config.yaml policies

# Every generator is `python -m MODULE` writing its chart files to their default place
# (the file header names the module); the staleness tests compare without any server.
GENERATORS := sandbox.api.crd sandbox.provision.rbac sandbox.artifacts.admission \
	sandbox.storage.admission sandbox.provision.accelerator_admission sandbox.policy.defaults

generate: $(PY) ## Regenerate the chart's CRDs, RBAC, admission policies and default SandboxPolicies
	@for module in $(GENERATORS); do $(PY) -m $$module > /dev/null || exit 1; done
	@git status --short -- charts

fmt: $(PY) ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: tools ## A non-interactive tour on a fresh local stack (fails if any step misbehaves)
	$(SANDBOXCTL) dev demo --dir .regsandbox/demo --mode $(MODE)

bench: tools ## Run the benchmarks (see BENCHMARKS.md)
	$(PY) bench/devenv_up.py

clean: down ## Stop the control plane and remove local state
	rm -rf $(DEV_DIR)
