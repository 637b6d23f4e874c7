# Sourced by build.sh and bento.sh. The vfs storage driver (the one that works here) keeps every
# layer as a full copy of the file tree: one cold build of the runtime image adds ~7 GB, and each
# rebuild left the previous chain behind untagged until the disk filled. These two functions let a
# build drop exactly what its own tags pointed to before and no longer do, and nothing else of
# the storage (other projects' images, images still tagged elsewhere, the current build's cache).

# image_ids TAG...: the image IDs the tags point to now (nothing for a tag that does not exist)
image_ids() {
  local tag
  for tag in "$@"; do
    # the template prints no newline of its own
    buildah inspect --type image --format '{{.FromImageID}}' "$tag" 2>/dev/null && echo || true
  done
}

# drop_superseded ID...: remove each image that no tag points to any more, with the untagged
# parents (the cached steps) only it used
drop_superseded() {
  local dangling id
  dangling=$(buildah images --noheading --no-trunc --filter dangling=true --format '{{.ID}}')
  for id in "$@"; do
    if grep -q "$id" <<<"$dangling"; then
      buildah rmi "$id" >/dev/null && echo "removed superseded image ${id:0:12}"
    fi
  done
}
