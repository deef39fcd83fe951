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

.PHONY: venv venv312 venv217 bpf demo demo-clean test sanity units units-newest units-oldest lint molecule \
	molecule-health molecule-fleet molecule-ssh molecule-ssh-newest kernel test-newest clean shell doc

venv:
	@PYTHON=$(PYTHON) VENV=$(VENV) scripts/bootstrap.sh

# A python3.X on PATH, else pyenv's (its shim only answers when 3.X is the selected version).
find_python = $(or $(shell PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | grep '^$(subst .,\.,$(1))\.' | tail -n 1) python$(1) -c 'import sys; print(sys.executable)' 2>/dev/null),python$(1))
PY312 ?= $(call find_python,3.12)
PY310 ?= $(call find_python,3.10)
# The oldest ansible-core claimed (meta/runtime.yml), on its oldest controller Python; under
# .build so that sanity's copy of the untracked files and the collection build never see it.
VENV217 := .build/venv217

venv312:
	@PYTHON=$(PY312) VENV=.venv312 scripts/bootstrap.sh

venv217:
	@PYTHON=$(PY310) VENV=$(VENV217) REQUIREMENTS=requirements-oldest.txt scripts/bootstrap.sh

bpf: venv
	@$(MAKE) -s -C files/bpf

demo: bpf
	ansible-playbook playbooks/lab.yml

demo-clean: venv
	ansible-playbook playbooks/lab.yml -e lab_state=absent

# The environment every target runs in, for a shell of your own in the checkout root:
#   eval "$$(make -s shell)"
shell:
	@echo 'export PATH=$(BIN):$$PATH ANSIBLE_COLLECTIONS_PATH=$(ANSIBLE_COLLECTIONS_PATH) ANSIBLE_CONFIG=$(ANSIBLE_CONFIG)'

# ansible-doc of this checkout's collection: make doc MODULE=lb_vip, make doc ROLE=balancer,
# make doc (the list of modules).
doc: venv
	@ansible-doc $(if $(MODULE),xdplb.katran.$(MODULE),$(if $(ROLE),-t role xdplb.katran.$(ROLE),-l xdplb.katran))

# ansible-test wants the collection at ansible_collections/<ns>/<name> and only looks at files
# git knows: sanity runs on a copy of the tracked and untracked-but-not-ignored files.
sanity: venv
	@tests/sanity/install_get_pip_standin.sh $(VENV)
	@rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	@git ls-files -co --exclude-standard | rsync -a --files-from=- ./ $(SANITY_ROOT)/
	@cd $(SANITY_ROOT) && git init -q && ansible-test sanity --venv --python 3.11 --color no

UNITS := tests/unit tests/dataplane tests/integration

units: bpf
	python -m pytest -q --durations=15 $(UNITS)

# The same units with the newest ansible-core (2.21 on Python 3.12). The tests run
# ansible-playbook and the modules with the Python that runs pytest, so naming it is enough.
units-newest: venv312 bpf
	.venv312/bin/python -m pytest -q --durations=5 $(UNITS)

# ansible-core 2.17 on Python 3.10, in under 2 minutes: every module and action plugin through
# ansible-playbook, the roles' and playbooks' input validation, the engine on the oldest Python.
# Left to 2.19 and 2.21 (about 5 of the units' 7 minutes): the dataplane, which has no Ansible in
# it, and the lab-based runs of the roles and playbooks. .build/venv217 goes with `make clean`.
OLDEST_UNITS := tests/unit $(addprefix tests/integration/,test_balancer_modules.py test_backend_modules.py \
	test_engine_install.py test_bad_input_balancer.py test_bad_input_backend.py test_playbook_inputs.py)
units-oldest: venv217 bpf
	$(VENV217)/bin/python -m pytest -q --durations=5 $(OLDEST_UNITS)

lint: venv
	ansible-lint --offline --profile production
	python scripts/role_docs.py --check

molecule: bpf
	molecule test -s default

# Health checks through the data path: the agent takes dead or misconfigured backends out of the
# rings and back, under a steady stream of new connections.
molecule-health: bpf
	molecule test -s health

# Fleet operations (2 balancers, 3 backends): failover, drain, rollout, reboot, distribution.
molecule-fleet: bpf
	molecule test -s fleet

# The fleet as fleets are reached: balancer and backends over SSH with become, /usr/bin/python3,
# the roles' packages installed from a local apt repository (lab_ssh; the first run builds the
# hosts' Debian image with debootstrap, about a minute, kept in /var/cache/xdplb-lab).
molecule-ssh: bpf
	molecule test -s ssh

# The same scenario with the newest ansible-core (2.21 on Python 3.12).
molecule-ssh-newest: venv312 bpf
	@$(MAKE) --no-print-directory VENV=.venv312 PYTHON=$(PY312) molecule-ssh

kernel: bpf
	XDPLB_KERNEL_TIER=1 python -m pytest -q tests/kernel

test: venv bpf sanity units units-newest units-oldest lint molecule molecule-health molecule-fleet molecule-ssh molecule-ssh-newest kernel

# A second pass with the newest ansible-core this machine's Pythons allow (2.21 on 3.12).
test-newest: units-newest molecule-ssh-newest
	@$(MAKE) --no-print-directory VENV=.venv312 PYTHON=$(PY312) molecule

clean:
	rm -rf .build tests/output
