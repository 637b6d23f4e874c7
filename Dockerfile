# Four targets: build (trains and exports the embedded digits model; torch lives only here),
# runtime (the default: serve + onnxruntime CPU, no torch, non-root), gpu (onnxruntime-gpu with
# NVIDIA's CUDA/cuDNN runtime wheels) and jobs (offline jobs on Ray: docs/JOBS.md). `make image`
# builds runtime with buildah; on a machine with Docker Hub `docker build .` builds it unchanged.
# The build arguments (all optional):
#   PYTHON_IMAGE      the base of every stage (default: the official slim Python image)
#   TORCH_INDEX       where the build stage finds the CPU torch wheel ("" for none)
#   GPU_BASE_IMAGE    the gpu target's base (default: the same slim Python image)
# Two inputs for builds behind an intercepting proxy or offline, never copied into a layer:
# the secret `ca` (a CA bundle: `--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt`), mounted
# over the base's bundle while pip runs, and the context's `wheels/` folder (empty in the
# repository; put a torch CPU wheel there), bind-mounted and searched before any index.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG GPU_BASE_IMAGE=python:3.11-slim-bookworm

# --- build: train and export the embedded default model, as `make model-digits` does ---------
# (service/ is not copied: a change to the service does not retrain the model)
FROM ${PYTHON_IMAGE} AS build
# PyPI's Linux torch wheel is the CUDA build; the CPU wheel of the pinned version comes from
# PyTorch's CPU index (pip takes 2.13.0+cpu for the constraint torch==2.13.0) or a wheel folder.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV BENTOML_DO_NOT_TRACK=true ORT_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# README.md is only the package's long description: each stage that pip-installs the project
# writes an empty one, so that editing the README retrains and reinstalls nothing
COPY pyproject.toml constraints.txt ./
COPY training training
COPY export export
COPY modelrepo modelrepo
COPY configs configs
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    --mount=type=bind,source=wheels,target=/wheels \
    touch README.md && python -m venv /venv \
 && /venv/bin/pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
      --find-links /wheels -c constraints.txt '.[train]'
RUN /venv/bin/python -m training --config configs/digits.toml --out runs/digits/checkpoint.pt \
 && /venv/bin/python -m export --checkpoint runs/digits/checkpoint.pt --repository /models \
      --name digits

# --- gpu: serve + onnxruntime-gpu with NVIDIA's CUDA/cuDNN runtime libraries as wheels -------
# (the `gpu` extra: onnxruntime-gpu[cuda,cudnn]), so any Python base works and no CUDA base image
# is needed; the libraries' folders are registered with the dynamic linker. Only the driver
# (libcuda.so.1) comes from the host, injected by the NVIDIA container runtime:
#   docker build --target gpu -t vae-serving:gpu . && docker run --gpus all ... vae-serving:gpu
# VAE_PROVIDER=auto picks CUDAExecutionProvider when a device is seen, else the CPU.
FROM ${GPU_BASE_IMAGE} AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV BENTOML_DO_NOT_TRACK=true ORT_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    BENTOML_HOME=/tmp/bentoml VAE_MODEL_REPOSITORY=/models VAE_MODELS=* \
    BENTOML_HOST=0.0.0.0 BENTOML_PORT=3000 VAE_GRPC_HOST=0.0.0.0 VAE_GRPC_PORT=8001 \
    VAE_PROVIDER=auto
WORKDIR /app
# the project's code is not in the install (its packages are absent here: only its dependencies
# and its version's metadata go into /venv), so a change to service/ reinstalls nothing
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    touch README.md && python -m venv /venv && /venv/bin/pip install -c constraints.txt '.[serve,gpu]' \
 && /venv/bin/pip uninstall -y -q pip setuptools wheel \
 && find /venv/lib -path '*/site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u \
      > /etc/ld.so.conf.d/nvidia-wheels.conf \
 && ldconfig \
 && useradd --uid 10001 --no-create-home vae
COPY service service
COPY modelrepo modelrepo
COPY --from=build /models /models
USER 10001
EXPOSE 3000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["/venv/bin/python", "-m", "service.healthcheck"]
CMD ["/venv/bin/python", "-m", "service.serve"]

# --- serve-venv: the runtime's packages, trimmed (binutils lives only in this stage) ----------
# no compilers, no pip cache, no torch; pip itself leaves too (nothing installs at run time), and
# so do the packages' test suites, type stubs (~23 MB, never imported) and the debug sections
# some wheels ship (~58 MB). No bytecode yet: the runtime stage writes it for what is imported.
FROM ${PYTHON_IMAGE} AS serve-venv
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_COMPILE=1
WORKDIR /app
# the dependencies and the project's metadata (its version, for V2 server metadata) only: its
# packages are not copied here, so the runtime stage's /app/service is the one copy and a
# change to service/ rebuilds the runtime stage alone
COPY pyproject.toml constraints.txt ./
COPY deploy/image/trim_venv.sh /usr/local/bin/
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    touch README.md && python -m venv /venv && /venv/bin/pip install -c constraints.txt '.[serve,cpu]' \
 && /venv/bin/pip uninstall -y -q pip setuptools wheel \
 && find /venv/lib -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf /venv/lib/python3.11/site-packages/tornado/test \
 && find /venv/lib -name '*.pyi' -delete \
 && find /venv -name '*.pyc' -delete \
 && trim_venv.sh /venv

# --- jobs: offline jobs on a Ray cluster (docs/JOBS.md; deploy/k8s/rayjob.yaml runs it) ------
# serve + cpu + jobs extras (Ray Data, pyarrow) and the code the jobs run; KubeRay starts `ray`
# from it on every node. `docker build --target jobs -t vae-serving:jobs .`
FROM ${PYTHON_IMAGE} AS jobs
ENV BENTOML_DO_NOT_TRACK=true ORT_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0 PATH=/venv/bin:$PATH PYTHONPATH=/app
WORKDIR /app
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    touch README.md && python -m venv /venv \
 && /venv/bin/pip install -c constraints.txt '.[serve,cpu,jobs]' \
 && useradd --uid 10001 --create-home ray
COPY service service
COPY modelrepo modelrepo
COPY jobs jobs
USER 10001

# --- runtime (the default target): serve + cpu extras only (no torch), non-root ---------------
# The model repository is the one the build stage exported; mount another at /models to serve it:
# every model folder in it is served (VAE_MODELS=*; VAE_MODELS=name serves one).
FROM ${PYTHON_IMAGE} AS runtime
ENV BENTOML_DO_NOT_TRACK=true ORT_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    BENTOML_HOME=/tmp/bentoml VAE_MODEL_REPOSITORY=/models VAE_MODELS=* \
    BENTOML_HOST=0.0.0.0 BENTOML_PORT=3000 VAE_GRPC_HOST=0.0.0.0 VAE_GRPC_PORT=8001
WORKDIR /app
COPY --from=serve-venv /venv /venv
COPY service service
COPY modelrepo modelrepo
COPY --from=build /models /models
COPY deploy/image/warm_bytecode.py deploy/image/
# uid 10001 cannot write __pycache__: one start of the CMD as root, every door called, writes
# the bytecode of exactly what a serving process imports (a failing call fails the build)
RUN /venv/bin/python deploy/image/warm_bytecode.py \
 && rm -rf /tmp/bentoml \
 && useradd --uid 10001 --no-create-home vae
USER 10001
EXPOSE 3000 8001
# `bentoml serve` with a metrics directory per instance (service/serve.py); host and ports:
# BENTOML_HOST/BENTOML_PORT, VAE_GRPC_HOST/VAE_GRPC_PORT
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["/venv/bin/python", "-m", "service.healthcheck"]
CMD ["/venv/bin/python", "-m", "service.serve"]
