# Cocoon Platform: every command creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lock lint test serve demo bench bench-peers bench-streams bench-cpu bench-compare bench-instructions clean

install: $(VENV)/.installed

# Exactly the pinned, hash-checked set in requirements.lock (runtime and test dependencies),
# then this project itself without resolving anything more. `pip check` catches a lock that no
# longer covers pyproject.toml: run `make lock`.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check >/dev/null || { $(BIN)/pip check; echo "requirements.lock does not cover pyproject.toml: run make lock" >&2; exit 1; }
	touch $@

# After changing dependencies in pyproject.toml: pin the newest versions that satisfy it, with
# their hashes, into requirements.lock (commit both). UPGRADE=1 also moves pins that still fit.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 --quiet \
		$(if $(UPGRADE),--upgrade) -o requirements.lock

# The gates: ruff's format check and lint rules over all Python here, mypy (strict, with the pydantic plugin) over
# src; both configured in pyproject.toml.
lint: install
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

# The test suite: every database-facing test runs on SQLite and on PostgreSQL
# (COCOON_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test).
test: install
	$(BIN)/pytest -q

serve: install
	$(BIN)/cocoon-platform serve

# The simulator and the platform wired together, walking through every endpoint.
demo: install
	$(BIN)/python scripts/demo.py

bench: install bench/.peers/.installed
	$(BIN)/python bench/run.py

# Peer gateways measured in the same run (LiteLLM's proxy), in a virtualenv of their own.
bench-peers: bench/.peers/.installed
bench/.peers/.installed:
	$(PYTHON) -m venv bench/.peers
	bench/.peers/bin/pip install --quiet 'litellm[proxy]>=1.60'
	touch $@

# Streams at model speed (30 tokens/s): the most concurrent streams one core relays at the
# network's pace, beside the bare pass-through (bench/streams.py; STREAMS e.g. "250,500,1000").
STREAMS ?= 250,500,1000
bench-streams: install
	$(BIN)/python bench/streams.py --streams $(STREAMS)

# The gate for a change: platform CPU per request, BASE (default main) against this working tree,
# interleaved runs, medians (bench/cpu.py; SCENARIOS e.g. "--scenario chat --scenario tools5").
BASE ?= main
bench-cpu: install
	$(BIN)/python bench/cpu.py --base $(BASE) $(SCENARIOS)

# What one scenario costs against another, through the server: COMPARE's scenarios in
# alternating bursts on one platform, each burst set against the first scenario's beside it
# (bench/cpu.py --compare; e.g. COMPARE=stream,responses_stream,messages_stream).
COMPARE ?= stream,responses_stream,messages_stream
bench-compare: install
	$(BIN)/python bench/cpu.py --compare $(COMPARE)

# The same comparison in instructions per request (callgrind, in process): what a noisy host's
# CPU times cannot tell (bench/instructions.py).
bench-instructions: install
	$(BIN)/python bench/instructions.py --base $(BASE) $(SCENARIOS)

clean:
	rm -rf $(VENV) data bench/results bench/.peers .pytest_cache
