# blspeech: the README's commands. Each target sets up what it needs.
#   make test   - create/refresh .venv, install Debian packages (as root), run the test suite
#                 (PYTEST_WORKERS=0: no worker processes; PYTEST_ARGS: more pytest options)
#   make demo   - the embedded recipe end to end: recipes/telephony_mini/run.sh (58.5 minutes
#                 on 2 CPU cores with AVX2 kernels); DEMO_ARGS passes options, e.g.
#                 make demo DEMO_ARGS="--quick true"   or   DEMO_ARGS="--device cuda"
#   make demo-quick - the same with --quick true (a few minutes, small corpus)
#   make setup  - only the set-up: .venv with blspeech editable + extras dev,vision,export,wfst
#   make lint   - ruff

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Debian packages the recipes and tests use (audio tools, synthesis, NIST sclite).
DEB_PACKAGES := sox espeak-ng flite sctk asterisk-core-sounds-en-wav asterisk-core-sounds-en
PYTEST_ARGS ?=
# Two pytest-xdist workers on the two cores, a test module per worker at a time (its
# module fixtures are built once); tests/conftest.py gives each worker one thread.
PYTEST_WORKERS ?= 2
DEMO_ARGS ?=

.PHONY: setup deb test demo demo-quick lint clean-venv

setup: $(STAMP) deb

# Re-install when the package metadata changes (a stale venv is rebuilt in place).
$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,vision,export,wfst,gmm]'
	touch $(STAMP)

deb:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "Debian packages missing:$$missing"; \
	  echo "install them with: sudo apt-get install -y$$missing"; \
	fi

test: setup
	$(VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

demo: setup
	PYTHON=$(CURDIR)/$(VENV)/bin/python recipes/telephony_mini/run.sh $(DEMO_ARGS)

demo-quick: setup
	PYTHON=$(CURDIR)/$(VENV)/bin/python recipes/telephony_mini/run.sh --quick true $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
