# hypermesh: `make run` starts the agent, `make test` runs the whole suite. Each installs what it needs: `make run`
# only the base system packages (and the bpf group when EBPF names programs for the agent to load), `make test` all.
SHELL := /bin/bash
PY_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LISTEN ?= 127.0.0.1:9137
EBPF ?=
PYTEST_ARGS ?=
# This machine's pip config names local package folders that may not exist; pip warns once per package.
PIP_QUIET := { grep -v 'is ignored: it is neither a file nor a directory' || true; }

.PHONY: help deps run-deps venv run run-cluster test test-fresh lint fmt bench bpf screenshots clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps:  ## system packages (apt-get as root, only what is missing)
	@scripts/deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	@set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | $(PIP_QUIET)
	@set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check -e '.[agent,cluster,dev]' 2>&1 | $(PIP_QUIET)
	@touch $@

venv: $(STAMP)  ## the project's virtualenv with every Python dependency

run-deps:  ## what `make run` needs: the base packages, and the bpf ones when EBPF is set
	@scripts/deps.sh base $(if $(strip $(EBPF)),bpf)

# HYPERMESH_VIA_MAKE=1: the agent's errors then name LISTEN=, the setting a `make run` user has, not --listen.
run: run-deps venv  ## start the agent on $(LISTEN) with its dashboard (LISTEN=127.0.0.1:0: any free port; EBPF="syscalls biolatency")
	@scripts/kernel-mounts.sh
	HYPERMESH_VIA_MAKE=1 $(VENV)/bin/hypermesh agent --listen $(LISTEN)$(foreach p,$(EBPF), --ebpf $(p))

run-cluster: venv  ## a local cluster: etcd and three agents on loopback that register in it (Ctrl-C stops all)
	@scripts/deps.sh base cluster
	@scripts/run-cluster.sh

lint: venv  ## ruff format check, ruff check, mypy --strict
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

fmt: venv  ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

test: deps venv lint  ## lint and the whole pytest suite (CI runs this)
	@scripts/kernel-mounts.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-fresh:  ## CI=true make test in a fresh minimal Debian 12 root (debootstrap, overlay /, chroot; root, ~15 min)
	@scripts/test-fresh.sh

bench: deps venv  ## benchmarks against psutil / node_exporter; writes bench/results/latest.json
	@scripts/kernel-mounts.sh
	$(PY) -m bench

bpf:  ## rebuild the committed eBPF objects from src/hypermesh/ebpf/programs/*.bpf.c (needs only the bpf deps)
	@scripts/deps.sh bpf
	$(MAKE) -C src/hypermesh/ebpf/programs

screenshots: venv  ## the dashboard at 1280 and 420 px into docs/ (needs chromium; as root with eBPF panels)
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
