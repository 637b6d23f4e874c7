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
args=(--isolation chroot --network host --format docker --layers)
# The stages the target is built from are tagged too (STAGES below), so that a rebuild can drop
# the chains it supersedes (superseded.sh) while the current ones stay as its layer cache.
STAGE_REPO=${STAGE_REPO:-localhost/vae-serving-stage}
STAGES=(build)
[[ $TARGET == runtime ]] && STAGES+=(serve-venv)
. deploy/image/superseded.sh

# a cold build of the runtime target adds ~7 GB to vfs storage (7.2 measured): stop before pip
# fills the disk rather than in the middle
graphroot=$(buildah info --format '{{index .store "GraphRoot"}}' 2>/dev/null || echo /var/lib/containers)
mkdir -p "$graphroot"  # a storage never used yet may not exist: df needs the path
free_gb=$(df -P --block-size=1G "$graphroot" | awk 'NR == 2 {print $4}')
min_gb=${IMAGE_MIN_FREE_GB:-8}
if (( free_gb < min_gb )); then
  echo "build.sh: ${free_gb} GB free under $graphroot, below the ${min_gb} GB this build asks" \
       "(IMAGE_MIN_FREE_GB): a cold build adds ~7 GB with the vfs driver; 'buildah images'" \
       "lists what takes the space" >&2
  exit 1
fi

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

# the pinned torch CPU wheel from pip's find-links folder, when it is there, into the context's
# wheels/ folder (the Dockerfile bind-mounts it; no layer keeps it), and the host's CA bundle as
# the build secret `ca` (a proxy's CA: mounted while pip runs, never copied)
links=$(pip config get global.find-links 2>/dev/null || true)
if [[ -n "$links" ]] && compgen -G "$links/torch-2.13.0+cpu-*.whl" >/dev/null; then
  for wheel in "$links"/torch-2.13.0+cpu-*.whl; do
    [[ -e wheels/$(basename "$wheel") ]] || ln "$wheel" wheels/ 2>/dev/null || cp "$wheel" wheels/
  done
  args+=(--build-arg TORCH_INDEX=)
fi
CA=/etc/ssl/certs/ca-certificates.crt
[[ -f $CA ]] && args+=(--secret "id=ca,src=$CA")

old=$(image_ids "$TAG" "${STAGES[@]/#/$STAGE_REPO:}")
for stage in "${STAGES[@]}"; do
  echo "buildah bud ${args[*]} --target $stage -t $STAGE_REPO:$stage ."
  buildah bud "${args[@]}" --target "$stage" -t "$STAGE_REPO:$stage" .
done
echo "buildah bud ${args[*]} --target $TARGET -t $TAG ."
buildah bud "${args[@]}" --target "$TARGET" -t "$TAG" .
# shellcheck disable=SC2086  # one ID per word
drop_superseded $old
