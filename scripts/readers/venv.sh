#!/usr/bin/env bash
# Makes (or reuses) the virtual environment with the two real readers that tests/readers and
# `prlimg differential --libphdi --dissect` run: libyal's libphdi (PyPI libphdi-python, module
# pyphdi) and fox-it's dissect.hypervisor, at the versions src/predict/readers models. Prints the
# versions installed. The folder: $PRLIMG_READERS_VENV, else ~/.cache/prlimg-readers-venv.
set -euo pipefail
venv=${PRLIMG_READERS_VENV:-$HOME/.cache/prlimg-readers-venv}
pins=("libphdi-python==20260902" "dissect.hypervisor==3.21" "dissect.cstruct==4.7" "dissect.util==3.24" "defusedxml==0.7.1")
stamp="$venv/.prlimg-pins"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
    echo "${pins[*]}" >"$stamp"
fi
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
import pyphdi
print("libphdi (pyphdi)", pyphdi.get_version(), "| dissect.hypervisor", version("dissect.hypervisor"),
      "| dissect.util", version("dissect.util"), "| dissect.cstruct", version("dissect.cstruct"))
PY
