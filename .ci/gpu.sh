#!/usr/bin/env bash
# The GPU check: every GPU path of the project in about 8 minutes on one H100/H200, offline.
#   bash .ci/gpu.sh          # on the GPU machine: 8 checks, one PASS/FAIL/SKIP line each
#   bash .ci/gpu.sh --cpu    # the same checks at toy size on the CPU (tests/test_gpu_check.py)
# Exits 1 if a check failed. Results: $OUT/gpu_check.txt ($OUT set) or out/gpu_check.txt; the
# commands' output: gpu_check.log beside it. What each check does: .ci/gpu_check.py's docstring.
#
# Offline inputs, carried into ignored folders (a machine without internet has nothing else):
#   .gguf/   SmolLM2-135M-Instruct.Q4_1.gguf, or its parts *.part00, *.part01 (joined and checked
#            against their sha256); $SCORE_GGUF overrides (a .gguf file or a folder). None: SKIP.
#   .whl/    wheels of packages the machine lacks (gguf, for the GGUF); installed offline if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# Carried wheels, for the modules this machine lacks only (a newer copy of an installed package could
# break the image's own): no index, no dependencies (the image has numpy, pyyaml, tqdm, requests).
if [ -d .whl ]; then
  for module in gguf accelerate; do
    if ! "$PYTHON" -c "import $module" 2>/dev/null && ls .whl/"$module"-*.whl >/dev/null 2>&1; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/score_site \
        --find-links .whl "$module"
      export PYTHONPATH=/tmp/score_site${PYTHONPATH:+:$PYTHONPATH}
      echo "installed $module from .whl/"
    fi
  done
fi

# The driver keeps each check within its own time budget; this is the backstop for a hang.
limit=540
[[ " $* " == *" --cpu "* ]] && limit=3600
exec timeout -k 10 $limit "$PYTHON" .ci/gpu_check.py "$@"
