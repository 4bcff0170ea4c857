#!/usr/bin/env bash
# Regenerate requirements.lock: the newest versions that pyproject.toml's ranges allow, resolved in a
# fresh venv, every runtime and test dependency pinned exactly. Then run `bash .ci/run` (which
# installs from the lock and runs the suite) and commit the lock only if it passes.
#   bash tools/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0           # the local CPU wheel (README)
python -m pip install -q -e ".[test,docs,cluster]"
{
  echo "# Exact versions of every runtime and test dependency; the set CI passed with."
  echo "# Used by the README install and .ci/run as a constraints file (pip install -c requirements.lock)."
  echo "# Regenerate with: bash tools/lock.sh   (then bash .ci/run before committing)"
  echo "# torch is pinned without its local tag: 2.13.0 matches the CPU wheel (+cpu) and CUDA builds alike."
  python -m pip freeze --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+[a-z0-9]+$/\1/'
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages; transformers $(grep '^transformers==' requirements.lock | cut -d= -f3), transformer-lens $(grep '^transformer-lens==' requirements.lock | cut -d= -f3))"
