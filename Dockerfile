# syntax=docker/dockerfile:1
# Not built on the development machines (no container engine there): every RUN below is the
# same command the Makefile runs, which CI exercises (see README, "What is not verified here").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: train and export the embedded default model (torch lives only in this stage) ---
FROM ${PYTHON_IMAGE} AS build
# PyPI's Linux torch wheel is the CUDA build; the CPU wheel of the pinned version comes from
# PyTorch's CPU index (pip takes 2.13.0+cpu for the constraint torch==2.13.0).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV BENTOML_DO_NOT_TRACK=true PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY training training
COPY export export
COPY service service
COPY modelrepo modelrepo
COPY configs configs
RUN python -m venv /venv \
 && /venv/bin/pip install --extra-index-url "${TORCH_INDEX}" -c constraints.txt '.[train]'
RUN /venv/bin/python -m training --config configs/digits.toml --out runs/digits/checkpoint.pt \
 && /venv/bin/python -m export --checkpoint runs/digits/checkpoint.pt --repository /models \
      --name digits

# --- gpu: serve + gpu extras (onnxruntime-gpu) on a CUDA 12 / cuDNN 9 runtime base -------------
# docker build --target gpu -t vae-serving:gpu . ; docker run --gpus all ... (VAE_PROVIDER=auto
# picks CUDAExecutionProvider when onnxruntime-gpu sees a device). Never built or run here.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS gpu
ENV BENTOML_DO_NOT_TRACK=true PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    BENTOML_HOME=/tmp/bentoml VAE_MODEL_REPOSITORY=/models VAE_MODEL_NAME=digits \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY service service
COPY modelrepo modelrepo
RUN python3.11 -m venv /venv && /venv/bin/pip install -c constraints.txt '.[serve,gpu]' \
 && useradd --uid 10001 --no-create-home vae
COPY --from=build /models /models
USER 10001
EXPOSE 3000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["/venv/bin/python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:3000/readyz', timeout=2)"]
CMD ["/venv/bin/bentoml", "serve", "service.app:VAEService", "--host", "0.0.0.0", "--port", "3000"]

# --- runtime (the default target): serve + cpu extras only (no torch), non-root ---------------
# The model repository is the one the build stage exported; mount another at /models to serve it.
FROM ${PYTHON_IMAGE} AS runtime
ENV BENTOML_DO_NOT_TRACK=true PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    BENTOML_HOME=/tmp/bentoml VAE_MODEL_REPOSITORY=/models VAE_MODEL_NAME=digits
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY service service
COPY modelrepo modelrepo
RUN python -m venv /venv && /venv/bin/pip install -c constraints.txt '.[serve,cpu]' \
 && useradd --uid 10001 --no-create-home vae
COPY --from=build /models /models
USER 10001
EXPOSE 3000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["/venv/bin/python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:3000/readyz', timeout=2)"]
CMD ["/venv/bin/bentoml", "serve", "service.app:VAEService", "--host", "0.0.0.0", "--port", "3000"]
