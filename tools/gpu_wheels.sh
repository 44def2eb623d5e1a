#!/usr/bin/env bash
# Download, on a machine with internet access, the wheels the GPU machine lacks into .whl/ (git-ignored),
# for CPython 3.12 on manylinux x86_64. tools/gpu_check.sh installs them there. The GPU machine has
# torch, torchvision, numpy, scipy, scikit-learn, opencv-python-headless, pillow, tabulate,
# tensorboard, psutil and PyYAML; it lacks fastreid, yacs, faiss and termcolor.
#
# faiss: faiss-cpu (18 MB). faiss-gpu-cu12 is 48 MB alone and needs CUDA 12's cuBLAS and runtime
# wheels (hundreds of MB; the GPU machine has CUDA 13 libraries), far over the 64 MiB a run may
# carry, so GPU k-NN uses the toolbox's exact blockwise torch search on CUDA
# (plugins.pseudo_labels.knn_search use_gpu=True) instead.
#
#   tools/gpu_wheels.sh [DEST (default .whl)]
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
# versions = the ones the CPU stack is tested with (requirements.txt / Makefile)
WHEELS=(fastreid==1.4.0 yacs==0.1.8 faiss-cpu==1.15.1 termcolor==2.5.0)
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" "${WHEELS[@]}"
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
ls -l "$DEST"/*.whl
echo "total: $((total / 1048576)) MiB of wheels in $DEST (a run carries at most 64 MiB with the working tree)"
if [ "$total" -gt $((56 * 1048576)) ]; then
    echo "error: the wheels in $DEST exceed 56 MiB: remove old versions (one version of each)" >&2
    exit 1
fi
