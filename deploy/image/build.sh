#!/usr/bin/env bash
# Build one target of the Dockerfile with buildah (no Docker engine needed), as root:
#   deploy/image/build.sh TARGET TAG
# The base is the official python:3.11-slim-bookworm when a registry can be reached, else the
# Debian-made stand-in (deploy/image/debian-base.sh; PYTHON_IMAGE overrides both). What only
# this host provides enters as build-time inputs, never as files in the image:
# - the pinned CPU torch wheel, when it lies in pip's find-links folder (mounted read-only);
# - the host's CA bundle (package downloads may pass a TLS-inspecting proxy), mounted read-only.
set -euo pipefail
TARGET=${1:?target}
TAG=${2:?tag}
cd "$(dirname "$0")/../.."
BASE=localhost/debian-python:3.11-bookworm
args=(--isolation chroot --network host --format docker --layers --target "$TARGET" -t "$TAG")

if [[ -z "${PYTHON_IMAGE:-}" ]]; then
  if buildah inspect --type image docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1 ||
     timeout 60 buildah pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
    PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm
  else
    buildah inspect --type image "$BASE" >/dev/null 2>&1 || deploy/image/debian-base.sh "$BASE"
    PYTHON_IMAGE=$BASE
  fi
fi
args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "GPU_BASE_IMAGE=$PYTHON_IMAGE")

links=$(pip config get global.find-links 2>/dev/null || true)
if [[ -n "$links" ]] && compgen -G "$links/torch-2.13.0+cpu-*.whl" >/dev/null; then
  args+=(--volume "$links:/wheels:ro" --build-arg TORCH_FIND_LINKS=/wheels --build-arg TORCH_INDEX=)
fi
CA=/etc/ssl/certs/ca-certificates.crt
[[ -f $CA ]] && args+=(--volume "$CA:$CA:ro")

echo "buildah bud ${args[*]} ."
buildah bud "${args[@]}" .
