#!/usr/bin/env bash
# Runs this tour (README.md beside this file): bash run.sh [OUT_DIR]  (default out/<tour>)
exec "${PYTHON:-$(dirname "$0")/../../.venv/bin/python}" "$(dirname "$0")/tour.py" "$@"
