# `make demo` and `make test` install everything they need first (apt packages, .venv).
# netsim creates network namespaces, so both run as root; a user gets sudo'd.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ifneq ($(shell id -u),0)
demo test test-vagrant bench install:
	exec sudo $(MAKE) $@
else
install:
	scripts/install-deps.sh

demo: install
	scripts/demo.sh

test: install
	.venv/bin/ruff check .
	.venv/bin/pytest

# Boots vagrant/'s VM for real (libvirt; software emulation where there is no KVM): the box,
# boot, provision, a cluster up, checked, traced and down in the VM, destroy, host unchanged.
# VMTESTS narrows it, e.g. VMTESTS="-k 'not two_vagrant_vms'" (what CI runs).
test-vagrant:
	scripts/install-deps.sh --vm
	.venv/bin/pytest -s -m vm tests/vm $(VMTESTS)

bench: install
	.venv/bin/python bench/cli_start.py
	.venv/bin/python bench/bringup.py
	.venv/bin/python bench/store.py
	.venv/bin/python bench/api.py
	.venv/bin/python bench/cni_latency.py
	.venv/bin/python bench/dataplane.py
	.venv/bin/python bench/calico.py
	.venv/bin/python bench/proxy_sync.py
	.venv/bin/python bench/proxy_sync_nft.py
	.venv/bin/python bench/proxy_sync_ipvs.py
	.venv/bin/python bench/dns.py
	.venv/bin/python bench/policy.py
	.venv/bin/python bench/trace.py
	.venv/bin/python bench/ingress.py
	.venv/bin/python bench/scale.py
endif

help:
	@echo "make demo   install, bring up scenarios/basic.yaml, show it working, tear it down"
	@echo "make test   install, run the test suite"
	@echo "make test-vagrant  install, boot vagrant/'s VM, run a cluster in it, destroy it (slow)"
	@echo "make bench  install, run the benchmarks"

.PHONY: help install demo test test-vagrant bench
