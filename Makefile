# Drehscheibe — every target creates and uses its own virtualenv (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench fuzz chaos clean screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/drehscheibe demo --dir .demo

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Long fuzz campaign over the parsers and verifiers (tests/hostile/test_fuzz.py, docs/security-tests.md), then the
# coverage-guided atheris targets for as long again (split over the targets); their crashes land in tests/hostile/regressions/.
fuzz: $(STAMP)
	FUZZ_SECONDS=$${FUZZ_SECONDS:-1800} $(BIN)/pytest -q -p no:cacheprovider tests/hostile/test_fuzz.py
	$(BIN)/python -m tests.hostile.atheris_targets --all --save-crashes --seconds $$(( $${FUZZ_SECONDS:-1800} / 3 ))

# Long fault-injection campaign: 1,000 messages, SIGKILLs and proxy faults (tests/chaos, docs/reliability.md).
chaos: $(STAMP)
	$(BIN)/pytest tests/chaos -m chaos -s

# PNGs of the web console's main pages (docs/console.md) from the demo federation in Debian's chromium.
screenshots: $(STAMP)
	$(BIN)/python -m tests.gateway.console.browser docs/screenshots

clean:
	rm -rf $(VENV) .demo .pytest_cache
