#!/usr/bin/env bash
# Makes sure a virtualenv with matrix-synapse (the reference homeserver) exists, and prints its
# path on stdout (progress goes to stderr):
#
#     venv="$(scripts/synapse-venv.sh)"
#
# PRESENCED_SYNAPSE_VENV moves it (default ~/.cache/presenced-synapse-venv); SYNAPSE_VERSION
# picks the version (default 1.163.2). An existing virtualenv with that version is reused.
set -euo pipefail

venv="${PRESENCED_SYNAPSE_VENV:-$HOME/.cache/presenced-synapse-venv}"
version="${SYNAPSE_VERSION:-1.163.2}"
if ! "$venv/bin/python" -c "import synapse, sys; sys.exit(synapse.__version__ != '$version')" 2>/dev/null; then
    echo "installing matrix-synapse==$version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "matrix-synapse==$version" >&2
fi
echo "$venv"
