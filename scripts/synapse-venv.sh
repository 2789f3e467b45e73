#!/usr/bin/env bash
# Makes sure a virtualenv with matrix-synapse (the reference homeserver) exists, and prints its
# path on stdout (progress goes to stderr):
#
#     venv="$(scripts/synapse-venv.sh)"              # SQLite only
#     venv="$(scripts/synapse-venv.sh --postgres)"   # with the [postgres,redis] extras
#
# PRESENCED_SYNAPSE_VENV moves it (default ~/.cache/presenced-synapse-venv, or
# ~/.cache/presenced-synapse-pg-venv with --postgres); SYNAPSE_VERSION picks the version
# (default 1.163.2). An existing virtualenv with that version (and, with --postgres, psycopg2
# and txredisapi) is reused.
#
# --postgres builds psycopg2 from source (PyPI has no Linux wheel for it): that needs
# pg_config (libpq-dev), a C compiler and Python's headers; scripts/synapse-deployment.sh
# installs those first. It is a separate virtualenv so the SQLite one stays small and quick.
set -euo pipefail

extras="" check="import synapse"
default_venv="$HOME/.cache/presenced-synapse-venv"
if [ "${1:-}" = --postgres ]; then
    extras="[postgres,redis]" check="import synapse, psycopg2, txredisapi"
    default_venv="$HOME/.cache/presenced-synapse-pg-venv"
fi
venv="${PRESENCED_SYNAPSE_VENV:-$default_venv}"
version="${SYNAPSE_VERSION:-1.163.2}"
if ! "$venv/bin/python" -c "$check, sys; sys.exit(synapse.__version__ != '$version')" 2>/dev/null; then
    echo "installing matrix-synapse$extras==$version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "matrix-synapse$extras==$version" >&2
fi
echo "$venv"
