#!/usr/bin/env bash
# release/gpu_run.sh [--smoke] OUT_DIR: the whole GPU job in one command (release/gpu_run.py says what it does).
# For a bare GPU machine that has PyTorch but none of this project's other dependencies: the pure-Python wheels
# carried in the git-ignored .whl/ (monai, pytorch-ignite, fire, termcolor, nibabel; docs/benchmarks.md) are
# installed to /tmp, and the repository goes on PYTHONPATH. Where they are installed already, nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import monai, ignite, fire, nibabel" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu_run: monai, ignite, fire or nibabel is missing and .whl/ holds no wheels (release/README.md)" >&2
        exit 1
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/iternet-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/iternet-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 release/gpu_run.py "$@"
