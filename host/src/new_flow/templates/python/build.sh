#!/bin/sh
# Builds {{wasm}} from app.py. Uses componentize-py from PATH if it is
# there, or installs requirements.txt into .venv first.
set -eu
cd "$(dirname "$0")"
if ! command -v componentize-py >/dev/null; then
  [ -x .venv/bin/componentize-py ] || {
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  }
  PATH="$PWD/.venv/bin:$PATH"
fi
componentize-py -d wit -w flow componentize app -o {{wasm}}
