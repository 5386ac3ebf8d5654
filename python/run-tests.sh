#!/usr/bin/env bash
# Builds and installs the tagstream Python package into a virtualenv and runs its pytest suite.
#
#   python/run-tests.sh [pytest args...]
#
# The virtualenv is python/.venv (TAGSTREAM_VENV overrides it; delete it for a clean run); the
# interpreter is $PYTHON (default python3, >= 3.9). `pip install ./python` is the one install
# step: pip fetches maturin from pyproject's build-system and cargo builds the extension in
# python/target. Tests that need torch or a GPU skip with the reason.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TAGSTREAM_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Uninstall first so that a rerun installs the freshly built wheel of the same version.
"$py" -m pip uninstall --quiet --yes tagstream >/dev/null 2>&1 || true
"$py" -m pip install --quiet "$here"
"$py" -m pip install --quiet "pytest>=7"
cd "$here"
# The pytest script, not `python -m pytest`: the latter would put python/ on sys.path, and
# python/tagstream (sources without the built extension) would shadow the installed package.
exec "$venv/bin/pytest" tests "$@"
