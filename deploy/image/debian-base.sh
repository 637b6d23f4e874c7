#!/usr/bin/env bash
# A python:3.11-slim-bookworm stand-in made from Debian's own packages, for machines that reach
# Debian's package mirror but no image registry. Usage (as root):
#   deploy/image/debian-base.sh [IMAGE] [MIRROR]
# -> IMAGE (default localhost/debian-python:3.11-bookworm) in the local containers storage,
# with `python` on PATH like the official image. The Dockerfile takes it as
# --build-arg PYTHON_IMAGE=IMAGE; on a machine with Docker Hub nothing of this is needed.
set -euo pipefail
IMAGE=${1:-localhost/debian-python:3.11-bookworm}
MIRROR=${2:-http://deb.debian.org/debian}
ROOT=$(mktemp -d /var/tmp/debian-base.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT

# python3.11-venv's dependencies named too: debootstrap's resolver misses python3-distutils (which provides python3.11-distutils)
PACKAGES=python3.11,python3.11-venv,python3-distutils,python3-pip-whl,python3-setuptools-whl
debootstrap --variant=minbase --include="$PACKAGES,ca-certificates" bookworm "$ROOT" "$MIRROR" \
  >/dev/null
chroot "$ROOT" python3.11 -m venv /tmp/venv-check  # ensurepip works: the Dockerfile's venv will
ln -sf /usr/bin/python3.11 "$ROOT/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$ROOT/usr/local/bin/python3"
# what an image does not need: package lists and caches, docs, man pages, locales
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/var/log/* \
  "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
  "$ROOT"/usr/share/locale/* "$ROOT"/tmp/*
chmod 755 "$ROOT"  # mktemp made it 0700: the image root must be traversable by USER 10001
tar -C "$ROOT" -c . | podman import --quiet \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "$IMAGE: $(du -sh --apparent-size "$ROOT" | cut -f1) unpacked"
