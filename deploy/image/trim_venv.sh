#!/bin/sh
# Strip the debug sections some wheels ship in their extension modules (ml_dtypes 23 MB,
# uvloop 12 MB, python-rapidjson 6 MB, ...: ~58 MB of the serving venv), as Debian's packaging
# does, then import every stripped module so a broken one fails the build, not the service.
# Vendored libraries under *.libs are left alone: auditwheel patched them with patchelf, and
# strip after patchelf is known to break a library. Usage (needs binutils): trim_venv.sh VENV
set -eu
VENV=${1:?venv}
SP=$(echo "$VENV"/lib/python3*/site-packages)
LIST=$(mktemp)
find "$SP" -name '*.so' -type f ! -path '*.libs/*' | while read -r f; do
  if readelf -S "$f" | grep -q ' \.debug_info'; then
    strip --strip-debug "$f" && echo "$f" >>"$LIST"
  fi
done
"$VENV/bin/python" -B - "$SP" "$LIST" <<'PY'  # -B: no bytecode (the warm start decides)
import importlib, pathlib, sys
sp, listed = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text().split()
optional = []
for f in listed:
    rel = pathlib.Path(f).relative_to(sp)
    try:
        importlib.import_module(".".join(rel.parts[:-1] + (rel.name.split(".")[0],)))
    except ModuleNotFoundError as exc:  # needs an optional package (PIL._imagingtk: tkinter)
        optional.append(f"{rel} ({exc.name})")
print(f"stripped {len(listed)} extension modules; all loaded but these, which need an "
      f"optional package: {', '.join(optional) or 'none'}")
PY
rm -f "$LIST"
