#!/usr/bin/env bash
# The official TensorFlow MoViNet (tf-models-official) in its own venv, for tests/test_official_tf.py and the
# bench's "LiteRT official" column: tests/official_tf_worker.py runs in it to build official models, save TF
# checkpoints and compute the official logits that mvcompile's imported weights must reproduce;
# bench/official_tf_worker.py exports mvcompile's weights with the official exporter to TFLite (it also runs
# the result in ai-edge-litert, pinned as in the LiteRT venv of bench/litert.py). mvcompile itself is not installed
# there: the worker puts the repo on sys.path, so the venv only adds what the spec loader and the TF
# importer import (pydantic, networkx, pyyaml, safetensors).
#
#   scripts/setup_tf_official.sh      # prints the venv's python
#
# Idempotent: a marker file listing the requirements is written only after a successful install and a
# smoke import; with it in place a re-run returns at once. About 3 GB and 4-7 minutes the first time (the
# time it took is logged on stderr).
# Exit 77 if python3.11 is missing (TensorFlow 2.20 has no wheels for every newer Python).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MVCOMPILE_TF_VENV:-$REPO/.cache/tf-official/venv}"
PYTHON311="${PYTHON311:-python3.11}"
REQUIREMENTS=(tensorflow==2.20.0 tf-models-official==2.20.0 ai-edge-litert==2.3.0 pydantic networkx pyyaml safetensors)
MARKER="$VENV/mvcompile-ready.txt"

log() { echo "setup_tf_official: $*" >&2; }

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "${REQUIREMENTS[*]}" ]]; then echo "$VENV/bin/python"; exit 0; fi
command -v "$PYTHON311" >/dev/null || { log "$PYTHON311 not found (set PYTHON311=...)"; exit 77; }

rm -f "$MARKER"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    "$PYTHON311" -m venv "$VENV"
fi
log "installing ${REQUIREMENTS[*]} (a few minutes the first time)"
"$VENV/bin/python" -m pip install -q "${REQUIREMENTS[@]}" >&2
TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH="$REPO" "$VENV/bin/python" -c \
    "import tensorflow, official.projects.movinet.tools.export_saved_model, ai_edge_litert.interpreter, mvcompile.importers.tf_checkpoint, mvcompile.spec" >&2
echo "${REQUIREMENTS[*]}" >"$MARKER"
log "ready in ${SECONDS} s"
echo "$VENV/bin/python"
