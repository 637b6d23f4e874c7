# Two commands matter: `make serve` (embedded default, end to end) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
MODEL_NAME ?= digits
REPOSITORY ?= models
EXTRAS ?= serve,cpu,train,dev
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

export BENTOML_DO_NOT_TRACK := true
export VAE_MODEL_REPOSITORY ?= $(REPOSITORY)
export VAE_MODEL_NAME ?= $(MODEL_NAME)

.PHONY: install model serve test lint clean

# The venv is rebuilt when the project's dependencies change.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/.installed

# Train and export the embedded default (scikit-learn digits) unless a version already exists.
model: install
	@if ls $(REPOSITORY)/$(MODEL_NAME)/*/manifest.json >/dev/null 2>&1; then \
	  echo "model $(REPOSITORY)/$(MODEL_NAME) present; skipping training"; \
	else \
	  $(BIN)/python -m training --data digits --out runs/$(MODEL_NAME)/checkpoint.pt && \
	  $(BIN)/python -m export --checkpoint runs/$(MODEL_NAME)/checkpoint.pt \
	    --repository $(REPOSITORY) --name $(MODEL_NAME); \
	fi

serve: model
	$(BIN)/bentoml serve service.app:VAEService --host $(HOST) --port $(PORT)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
