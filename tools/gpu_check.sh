#!/usr/bin/env bash
# The prepared GPU check (issue #23): install the carried wheels, then run tools/gpu_check.py
# (one table on stdout, JSON to $OUT/gpu_check.json or --out). Arguments go to gpu_check.py, e.g.
#
#   tools/gpu_check.sh                       # on the GPU machine, <= 8 minutes (--budget 480)
#   tools/gpu_check.sh --device cpu --tiny   # CPU dry run
#
# Prepare the wheels first where the internet is reachable: tools/gpu_wheels.sh (writes .whl/).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    SITE=${GPU_CHECK_SITE:-/tmp/site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "gpu_check: installing .whl/*.whl into $SITE failed" >&2; exit 1; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
missing=$("$PY" - <<'PY'
import importlib.util
print(" ".join(m for m in ("torch", "torchvision", "fastreid", "yacs", "faiss", "termcolor", "tabulate", "cv2",
                           "sklearn", "scipy", "PIL") if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python modules: $missing (run tools/gpu_wheels.sh where pip reaches PyPI and carry .whl/)" >&2
    exit 1
fi
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec "$PY" tools/gpu_check.py "$@"
