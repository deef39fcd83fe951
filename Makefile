# xdplb.katran — every developer and CI entry point. Each target sets up what it needs.
#   make demo   build the lab of network namespaces and show traffic flowing through it
#   make test   the whole test suite, as CI runs it (.ci/run)
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.build/collections
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR := 0
SANITY_ROOT := .build/sanity/ansible_collections/xdplb/katran

.PHONY: venv venv312 bpf demo demo-clean test sanity units lint molecule molecule-fleet kernel test-newest clean

venv:
	@PYTHON=$(PYTHON) VENV=$(VENV) scripts/bootstrap.sh

# A python3.12 on PATH, else pyenv's (its shim only answers when 3.12 is the selected version).
PY312 ?= $(or $(shell PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | grep '^3\.12' | tail -n 1) python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null),python3.12)

venv312:
	@PYTHON=$(PY312) VENV=.venv312 scripts/bootstrap.sh

bpf: venv
	@$(MAKE) -s -C files/bpf

demo: bpf
	ansible-playbook playbooks/lab.yml

demo-clean: venv
	ansible-playbook playbooks/lab.yml -e lab_state=absent

# ansible-test wants the collection at ansible_collections/<ns>/<name> and only looks at files
# git knows: sanity runs on a copy of the tracked and untracked-but-not-ignored files.
sanity: venv
	@tests/sanity/install_get_pip_standin.sh $(VENV)
	@rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	@git ls-files -co --exclude-standard | rsync -a --files-from=- ./ $(SANITY_ROOT)/
	@cd $(SANITY_ROOT) && git init -q && ansible-test sanity --venv --python 3.11 --color no

units: bpf
	python -m pytest -q --durations=15 tests/unit tests/dataplane tests/integration

lint: venv
	ansible-lint --offline --profile production
	python scripts/role_docs.py --check

molecule: bpf
	molecule test -s default

# Fleet operations (2 balancers, 3 backends): failover, drain, rollout, reboot, distribution.
molecule-fleet: bpf
	molecule test -s fleet

kernel: bpf
	XDPLB_KERNEL_TIER=1 python -m pytest -q tests/kernel

test: venv bpf sanity units lint molecule molecule-fleet kernel

# A second pass with the newest ansible-core this machine's Pythons allow (2.21 on 3.12).
test-newest: venv312
	@$(MAKE) VENV=.venv312 PYTHON=$(PY312) units molecule

clean:
	rm -rf .build tests/output
