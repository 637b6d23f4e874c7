# Two commands matter: `make serve` (embedded default, end to end) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
GRPC_PORT ?= 8001
MODEL_NAME ?= digits
# several models in one service: MODELS=digits,mnist (each trained when absent), or MODELS=*
# (every model folder of the repository, also those that appear later; digits when empty)
MODELS ?=
REPOSITORY ?= models
DATA_DIR ?= data
MNIST_SOURCE ?= ../shared/data/mnist
EXTRAS ?= serve,cpu,train,dev,jobs
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

export BENTOML_DO_NOT_TRACK := true
export ORT_DISABLE_TELEMETRY := 1
export VAE_MODEL_REPOSITORY ?= $(REPOSITORY)
export VAE_DATA_DIR ?= $(DATA_DIR)
export VAE_MODEL_NAME ?= $(MODEL_NAME)
export VAE_MODELS ?= $(MODELS)
export VAE_GRPC_HOST ?= $(HOST)
export VAE_GRPC_PORT ?= $(GRPC_PORT)

.PHONY: install model model-digits model-mnist data-mnist data-fashion model-fashion fashion-baseline data-if-present serve ts-client test test-quick lint clean bench-p1 loadtest bench \
	bench-p6 bench-peers bench-serving bench-models bench-jobs neighbors-quality ood sampling-quality image-push model-archive docker-deps test-docker bench-deps system-deps fuzz soak sharp-mnist beta-sweep \
	image image-deps image-gpu test-image image-save image-figures bento-image chaos

# PyTorch's CPU build. From PyPI, torch==X is the CUDA build (several GB), so when pip cannot
# already find the pinned wheel without an index (a local find-links folder, or installed), it
# comes from PyTorch's CPU index first; the main install then keeps it. Asking that index only
# when needed spares offline machines its timeouts (pip retries an unreachable index for
# every package it looks up). TORCH_INDEX= (empty) skips this step.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := $(shell sed -n 's/^torch==//p' constraints.txt)

# The venv is rebuilt when the project's dependencies change.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [[ "$(EXTRAS)" == *train* && -n "$(TORCH_INDEX)" ]] && ! $(BIN)/pip install -q \
	    --dry-run --ignore-installed --no-index --no-deps torch==$(TORCH_PIN) >/dev/null 2>&1; \
	  then echo "torch $(TORCH_PIN): the CPU build from $(TORCH_INDEX)"; \
	  $(PIP_INSTALL) torch==$(TORCH_PIN) --index-url $(TORCH_INDEX) \
	    --extra-index-url https://pypi.org/simple; fi
	$(PIP_INSTALL) -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/.installed

# Train, report and export one model from its config: $(call build_model,NAME,CONFIG)
define build_model
	$(BIN)/vae-train --config $(2) --out runs/$(1)/checkpoint.pt
	$(BIN)/python -m training.report --checkpoint runs/$(1)/checkpoint.pt --out runs/$(1)/report
	$(BIN)/vae-export --checkpoint runs/$(1)/checkpoint.pt --repository $(REPOSITORY) --name $(1)
endef

# Train each model to serve (MODELS, else MODEL_NAME; default: the embedded digits) unless a
# version of it already exists. MODELS=*: digits when the repository holds no model yet.
TO_TRAIN = $(if $(filter *,$(MODELS)),$(if $(wildcard $(REPOSITORY)/*/*/manifest.json),,digits),$(or $(subst $(comma), ,$(MODELS)),$(MODEL_NAME)))
comma := ,
model: install
	@for m in $(TO_TRAIN); do \
	  if ls $(REPOSITORY)/$$m/*/manifest.json >/dev/null 2>&1; then \
	    echo "model $(REPOSITORY)/$$m present; skipping training"; \
	  else \
	    $(MAKE) --no-print-directory model-$$m REPOSITORY=$(REPOSITORY) || exit 1; \
	  fi; \
	done

# Each run adds a new version to the repository.
model-digits: install
	$(call build_model,digits,configs/digits.toml)

model-mnist: install data-mnist
	$(call build_model,mnist,configs/mnist.toml)

# Data sets live under DATA_DIR (VAE_DATA_DIR for the commands; docs/TRAINING.md). MNIST is not
# downloaded (nothing here fetches data at run time): data-mnist links the IDX files from
# MNIST_SOURCE, a folder holding at least t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.
data-mnist:
	@if ls $(DATA_DIR)/mnist/t10k-images-idx3-ubyte* >/dev/null 2>&1; then :; \
	elif [ -d "$(MNIST_SOURCE)" ]; then mkdir -p $(DATA_DIR) && rm -f $(DATA_DIR)/mnist && \
	  ln -s "$$(cd "$(MNIST_SOURCE)" && pwd)" $(DATA_DIR)/mnist && echo "$(DATA_DIR)/mnist -> $(MNIST_SOURCE)"; \
	else echo "no MNIST: put the IDX files (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz," \
	  "and train-* for the full set) in $(DATA_DIR)/mnist/, or MNIST_SOURCE=<folder>"; exit 1; fi

# Fashion-MNIST (60,000 + 10,000, IDX) from Debian's package dataset-fashion-mnist
FASHION_SOURCE ?= /usr/share/datasets/fashion-mnist
data-fashion:
	@if ls $(DATA_DIR)/fashion/t10k-images-idx3-ubyte* >/dev/null 2>&1; then :; \
	elif [ -d "$(FASHION_SOURCE)" ] || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }; then \
	  mkdir -p $(DATA_DIR) && rm -f $(DATA_DIR)/fashion && \
	  ln -s "$(FASHION_SOURCE)" $(DATA_DIR)/fashion && echo "$(DATA_DIR)/fashion -> $(FASHION_SOURCE)"; \
	else echo "no Fashion-MNIST: on Debian/Ubuntu, apt-get install dataset-fashion-mnist (as root);" \
	  "elsewhere put its IDX files in $(DATA_DIR)/fashion/ or FASHION_SOURCE=<folder>"; exit 1; fi

model-fashion: install data-fashion
	$(call build_model,fashion,configs/fashion.toml)

# pytorch/examples' MLP VAE on Fashion-MNIST for about the conv model's wall time, beside it
# (docs/MODEL_QUALITY.md); reuses the conv run's feature network for the figures
fashion-baseline: install data-fashion
	@test -f runs/fashion/features.pt || $(MAKE) --no-print-directory model-fashion
	$(BIN)/vae-train --config configs/fashion_mlp.toml --feature-net runs/fashion/features.pt \
	  --out runs/fashion_mlp/checkpoint.pt

# the tests that read MNIST skip (with the reason) when it is absent
data-if-present:
	@-$(MAKE) --no-print-directory data-mnist 2>/dev/null | grep -v '^no MNIST' || true
	@-$(MAKE) --no-print-directory data-fashion 2>/dev/null | grep -v '^no Fashion' || true

# Plain vs perceptual vs adversarial vs both on MNIST-10k (docs/MODEL_QUALITY.md): four
# trainings of <= 15 min each, one after the other (about an hour), then the table and pictures.
sharp-mnist: install data-mnist
	$(BIN)/python -m training.sharp --out runs/sharp --figures docs/images/sharp

# beta-VAE, measured: the digits model at six beta (about a minute each at most), a table and
# a figure (docs/MODEL_QUALITY.md, "beta, measured")
beta-sweep: install
	$(BIN)/python -m training.beta_sweep --betas 0.25,0.5,1,2,4,8 --out runs/beta \
	  --figure docs/images/beta_sweep.png

serve: model
	@echo "HTTP=http://$(HOST):$(PORT) GRPC=$(HOST):$(GRPC_PORT)  (export both for README's tour)"
	@echo "the page: http://$(HOST):$(PORT)/ui/  API reference: http://$(HOST):$(PORT)/docs"
	$(BIN)/vae-serve --host $(HOST) --port $(PORT)

# Benchmarks (docs/BENCHMARKS.md). `make bench` measures every row in one run, then prints one
# table with each goal (benchmarks/table.py): P1 onnxruntime vs PyTorch eager, P2-P5 serving
# (benchmarks/serving.py), P6 vs a real Triton Inference Server (nvidia-pytriton, CPU only, in
# its own venv). Needs both models (make model-mnist is the long step) and Debian's wrk
# (installed here with apt when missing). BENCH_SECONDS per run, 3 runs per cell; ~8.5 min with
# the models present. bench-p1, bench-serving and bench-p6 run one part alone.
BENCH_SECONDS ?= 10
TRITON_VENV ?= .venv-triton
RUN_P1 = $(BIN)/python -m benchmarks.p1_onnx_vs_torch --checkpoint runs/digits/checkpoint.pt \
	  --checkpoint runs/mnist/checkpoint.pt --out results/bench-p1.json
RUN_SERVING = $(BIN)/python -m benchmarks.serving --repository $(REPOSITORY) \
	  --seconds $(BENCH_SECONDS) --out results/bench.json
RUN_MODELS = $(BIN)/python -m benchmarks.models --repository $(REPOSITORY) \
	  --models digits,mnist --seconds $(BENCH_SECONDS) --out results/bench-models.json
RUN_P6 = $(BIN)/python -m benchmarks.p6_triton --triton-python $(TRITON_VENV)/bin/python \
	  --repository $(REPOSITORY) --seconds $(BENCH_SECONDS) --out results/bench-p6.json

bench: bench-deps $(PEERS_VENV)/bin/python
	@ls $(REPOSITORY)/mnist/*/manifest.json >/dev/null 2>&1 || \
	  $(MAKE) --no-print-directory model-mnist
	$(RUN_P1)
	$(RUN_SERVING)
	$(RUN_P6)
	$(RUN_PEERS)
	$(RUN_MODELS)
	$(BIN)/python -m benchmarks.table
bench-p1: install
	@test -f runs/digits/checkpoint.pt || $(MAKE) --no-print-directory model-digits
	$(RUN_P1)
bench-serving: bench-deps
	@ls $(REPOSITORY)/mnist/*/manifest.json >/dev/null 2>&1 || \
	  $(MAKE) --no-print-directory model-mnist
	$(RUN_SERVING)
bench-p6: bench-deps
	$(RUN_P6)
# several models in one service (P7, RSS per model: docs/BENCHMARKS.md)
bench-models: bench-deps
	@ls $(REPOSITORY)/mnist/*/manifest.json >/dev/null 2>&1 || \
	  $(MAKE) --no-print-directory model-mnist
	$(RUN_MODELS)
# offline jobs: local engine vs bare onnxruntime, the service, Ray on 2 local nodes (~5 min)
bench-jobs: install data-mnist
	@ls $(REPOSITORY)/mnist/*/manifest.json >/dev/null 2>&1 || \
	  $(MAKE) --no-print-directory model-mnist
	$(BIN)/python -m benchmarks.jobs --repository $(REPOSITORY) --model mnist \
	  --mnist $(DATA_DIR)/mnist
# out-of-distribution detection, MNIST vs Fashion-MNIST both ways (docs/MODEL_QUALITY.md)
ood: install data-mnist data-fashion
	@ls $(REPOSITORY)/mnist/*/manifest.json >/dev/null 2>&1 || $(MAKE) --no-print-directory model-mnist
	@ls $(REPOSITORY)/fashion/*/manifest.json >/dev/null 2>&1 || $(MAKE) --no-print-directory model-fashion
	$(BIN)/python -m benchmarks.ood --repository $(REPOSITORY) --mnist $(DATA_DIR)/mnist \
	  --fashion $(DATA_DIR)/fashion
# /neighbors' measures: leave-one-out 5-NN label agreement per model (docs/MODEL_QUALITY.md)
sampling-quality: install data-mnist data-fashion
	@ls $(REPOSITORY)/mnist/*/manifest.json >/dev/null 2>&1 || $(MAKE) --no-print-directory model-mnist
	@ls $(REPOSITORY)/fashion/*/manifest.json >/dev/null 2>&1 || $(MAKE) --no-print-directory model-fashion
	$(BIN)/python -m benchmarks.sampling_quality --repository $(REPOSITORY) \
	  --mnist $(DATA_DIR)/mnist --fashion $(DATA_DIR)/fashion
neighbors-quality: install
	$(BIN)/python -m benchmarks.neighbors_quality --repository $(REPOSITORY) --models digits,mnist
# LitServe, Ray Serve and KServe serving the same encoder (benchmarks/peers_bench.py), in
# their own venv: the service's pins never move
PEERS_VENV ?= .venv-peers
$(PEERS_VENV)/bin/python:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --disable-pip-version-check -q \
	  -c benchmarks/peers/peers-constraints.txt litserve "ray[serve]" kserve onnxruntime
RUN_PEERS = $(BIN)/python -m benchmarks.peers_bench --peers-python $(PEERS_VENV)/bin/python \
	  --repository $(REPOSITORY) --seconds $(BENCH_SECONDS) --out results/bench-peers.json
bench-peers: bench-deps $(PEERS_VENV)/bin/python
	@ls $(REPOSITORY)/digits/*/manifest.json >/dev/null 2>&1 || $(MAKE) --no-print-directory model
	$(RUN_PEERS)
bench-deps: install $(TRITON_VENV)/bin/python
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PIP_INSTALL) -e '.[$(EXTRAS),bench]'
	@ls $(REPOSITORY)/digits/*/manifest.json >/dev/null 2>&1 || $(MAKE) --no-print-directory model-digits
$(TRITON_VENV)/bin/python:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --disable-pip-version-check -q \
	  -c benchmarks/peers/triton-constraints.txt nvidia-pytriton onnxruntime

# Bounded headless locust run against a server it starts (or LOAD_HOST); fails on any failed
# request or a p95 above P95_MS. Reports: $(LOAD_RESULTS)/locust_*.csv and report.html.
USERS ?= 16
SPAWN_RATE ?= 8
RUN_TIME ?= 30s
P95_MS ?= 1000
LOAD_USERS ?= MixUser
LOAD_ENCODING ?= json
LOAD_HOST ?=
LOAD_RESULTS ?= results/loadtest
loadtest: model
	$(BIN)/python -m loadtests.run --users $(USERS) --spawn-rate $(SPAWN_RATE) \
	  --run-time $(RUN_TIME) --p95-ms $(P95_MS) --encoding $(LOAD_ENCODING) \
	  --host "$(LOAD_HOST)" --results $(LOAD_RESULTS) $(LOAD_USERS)

# Debian packages the tests use as real tools: prometheus and promtool (the scrape test)
# Debian packages the tests use: Prometheus (a real scrape) and Chromium + its matching driver
# (the /ui browser tests)
system-deps: image-deps
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  command -v haproxy >/dev/null && command -v node >/dev/null && command -v npm >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    prometheus chromium chromium-driver haproxy nodejs npm; }
	@test -d /usr/share/datasets/fashion-mnist || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }

# A TypeScript client generated from a running service's /docs.json (openapi-typescript, used
# through openapi-fetch; docs/API.md): its types in clients/typescript/src/api.d.ts (not
# committed), then the example compiled against them. `make serve` in another shell first.
DOCS_URL ?= http://$(HOST):$(PORT)/docs.json
ts-client:
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && \
	  DOCS_URL=$(DOCS_URL) npm run --silent generate && npm run --silent build
	@echo "run it: node clients/typescript/dist/example.js http://$(HOST):$(PORT)"

# Container images with buildah (no Docker engine needed; run as root). `make image` builds the
# Dockerfile's runtime target as $(IMAGE); `make test-image` builds it and runs the image's own
# CMD through tests/test_image.py; `make image-save` writes it as a docker-archive.
IMAGE ?= localhost/vae-serving:latest
IMAGE_GPU ?= localhost/vae-serving:gpu
image-deps:
	@command -v buildah >/dev/null && command -v podman >/dev/null && \
	  command -v debootstrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    buildah podman debootstrap; }
	@grep -qs '^driver = "vfs"' /etc/containers/storage.conf || \
	  printf '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' \
	    > /etc/containers/storage.conf

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image: image-deps
	deploy/image/build.sh runtime $(IMAGE)
	buildah tag $(IMAGE) localhost/vae-serving:$(VERSION)

# Push the image to REGISTRY (e.g. registry.example.com/team) and print the reference by
# digest to deploy (deploy/k8s/deployment.yaml names vae-serving:$(VERSION))
image-push: image-deps
	@test -n "$(REGISTRY)" || { echo "make image-push REGISTRY=host[:port]/path"; exit 2; }
	mkdir -p results
	buildah push --digestfile results/image.digest $(IMAGE) docker://$(REGISTRY)/vae-serving:$(VERSION)
	@echo "deploy: $(REGISTRY)/vae-serving@$$(cat results/image.digest)"

# The model repository as one versioned archive for the Kubernetes init container (same
# repository, same bytes, same sha256: put both in deploy/k8s/models-configmap.yaml)
ARCHIVE ?= results/models.tar.gz
model-archive: install
	$(BIN)/python -m modelrepo.fetch --pack $(REPOSITORY) --out $(ARCHIVE)

# the gpu image, then its checks without a GPU (tests/test_image_gpu.py; not in make test)
image-gpu: install image-deps
	deploy/image/build.sh gpu $(IMAGE_GPU)
	VAE_GPU_IMAGE_TEST=1 VAE_GPU_IMAGE=$(IMAGE_GPU) $(BIN)/python -m pytest -q tests/test_image_gpu.py

# BentoML's own way: `bentoml build` + `bentoml containerize --backend buildah`
BENTO_IMAGE ?= localhost/vae-bento:latest
bento-image: model image-deps
	BIN=$(BIN) deploy/image/bento.sh $(BENTO_IMAGE)

test-image: install image bento-image docker-deps
	VAE_IMAGE_TEST=1 VAE_IMAGE=$(IMAGE) VAE_BENTO_IMAGE=$(BENTO_IMAGE) VAE_DOCKER_TEST=1 \
	  $(BIN)/python -m pytest -q tests/test_image.py tests/test_image_build.py tests/test_docker.py

# The runtime image under a Docker engine (the one that answers, or Debian's dockerd started
# for the test and stopped after): docker build, load, run under limits, stop, compose up
# (tests/test_docker.py)
docker-deps:
	@command -v dockerd >/dev/null && test -x /usr/bin/docker && command -v docker-compose >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io \
	    docker-compose; }
test-docker: install image docker-deps
	VAE_DOCKER_TEST=1 VAE_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q tests/test_docker.py

image-figures: install image
	$(BIN)/python -m benchmarks.image_figures --image $(IMAGE)

SAVE ?= results/vae-serving.tar
image-save: image-deps
	mkdir -p $(dir $(SAVE))
	rm -f $(SAVE)
	buildah push -q $(IMAGE) docker-archive:$(SAVE):vae-serving:latest

# Soak: SOAK_MINUTES at SOAK_FRACTION of the measured peak; failures, p99 per minute, RSS
SOAK_MINUTES ?= 10
SOAK_FRACTION ?= 0.8
# Two replicas behind HAProxy, broken in seven ways under load (loadtests/chaos.py); needs
# haproxy (make system-deps). CHAOS_SECONDS per scenario, load at CHAOS_FRACTION of the peak.
CHAOS_SECONDS ?= 30
CHAOS_FRACTION ?= 0.5
chaos: model
	$(BIN)/python -m loadtests.chaos --seconds $(CHAOS_SECONDS) --fraction $(CHAOS_FRACTION) \
	  --repository $(REPOSITORY) --model digits --checkpoint runs/digits/checkpoint.pt \
	  --results results/chaos

soak: model
	$(BIN)/python -m loadtests.soak --minutes $(SOAK_MINUTES) --fraction $(SOAK_FRACTION) \
	  --results results/soak

# Longer fuzzing than make test's 100 examples per operation (tests/test_fuzz.py)
FUZZ_EXAMPLES ?= 2000
fuzz: install
	VAE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py

# The whole suite in TEST_WORKERS processes (pytest-xdist), each module whole in one of them
# (its server started once), the slowest modules first (tests/conftest.py); TEST_WORKERS=0 runs
# it in this one process.
TEST_WORKERS ?= 2
test: install system-deps data-if-present
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# The development loop (a few minutes): the unit and contract tests, and one real-server module
# per door (HTTP JSON, V2 REST and gRPC with tritonclient, several models at once). `make test`
# stays the whole suite, the one CI runs.
QUICK_TESTS ?= tests/test_registry.py tests/test_tensors_latent.py tests/test_v2_logic.py \
	tests/test_settings.py tests/test_metrics_logic.py tests/test_model.py \
	tests/test_service_http.py tests/test_v2.py tests/test_models.py tests/test_openapi.py
test-quick: install data-if-present
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(QUICK_TESTS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
