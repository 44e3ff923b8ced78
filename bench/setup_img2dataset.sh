#!/usr/bin/env bash
# Make .venv-img2dataset with img2dataset and its own pins, for bench/ingest.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-img2dataset
.venv-img2dataset/bin/python -m pip install -q --upgrade pip
.venv-img2dataset/bin/python -m pip install -q -r bench/requirements-img2dataset.txt
.venv-img2dataset/bin/python -c "import img2dataset; print('img2dataset ready')"
