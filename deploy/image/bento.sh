#!/usr/bin/env bash
# The BentoML way to an image: `bentoml build` (bentofile.yaml) then `bentoml containerize` with
# BentoML's buildah backend, as root:   deploy/image/bento.sh TAG
# BentoML's generated Dockerfile starts FROM python:3.11-slim and installs uv with `pip`. Where
# no registry answers, the bento is built from a copy of bentofile.yaml whose docker.base_image
# is the Debian-made base plus a pip on PATH (made here once); the bentofile itself is unchanged.
set -euo pipefail
TAG=${1:?tag}
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
BASE=localhost/debian-python:3.11-bookworm
PIP_BASE=$BASE-pip
bentofile=bentofile.yaml
. deploy/image/superseded.sh
old=$(image_ids "$TAG")

if ! timeout 60 buildah pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
  buildah inspect --type image "$BASE" >/dev/null 2>&1 || deploy/image/debian-base.sh "$BASE"
  if ! buildah inspect --type image "$PIP_BASE" >/dev/null 2>&1; then
    c=$(buildah from "$BASE")
    buildah run --isolation chroot "$c" -- python3.11 -m venv /opt/pip
    # uv (installed by BentoML's Dockerfile) reads the system trust store, like pip does here
    buildah config --env PATH=/opt/pip/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env UV_NATIVE_TLS=1 "$c"
    buildah commit -q "$c" "$PIP_BASE" >/dev/null && buildah rm "$c" >/dev/null
  fi
  bentofile=$(mktemp --suffix=.yaml)
  trap 'rm -f "$bentofile"' EXIT
  "$BIN/python" - "$bentofile" "$PIP_BASE" <<'PY'
import sys, yaml
spec = yaml.safe_load(open("bentofile.yaml"))
spec["docker"] = {"base_image": sys.argv[2]}  # python_version: the base's own 3.11
yaml.safe_dump(spec, open(sys.argv[1], "w"))
PY
fi

"$BIN/bentoml" delete -y vae:image >/dev/null 2>&1 || true  # rebuilt from this tree
"$BIN/bentoml" build -f "$bentofile" --version image . >/dev/null
CA=/etc/ssl/certs/ca-certificates.crt
"$BIN/bentoml" containerize vae:image --backend buildah --image-tag "$TAG" \
  --opt isolation=chroot --opt network=host --opt format=docker \
  $([[ -f $CA ]] && echo --opt "volume=$CA:$CA:ro")
# shellcheck disable=SC2086  # one ID per word
drop_superseded $old
