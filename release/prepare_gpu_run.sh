#!/usr/bin/env bash
# Prepare, on a machine with internet, what release/gpu_run.sh needs on a bare GPU machine (release/README.md):
# the pure-Python wheels PyTorch's image lacks (for Python 3.12) in .whl/, and a copy of DRIVE in device_data/DRIVE.
# Both folders are git-ignored (DRIVE's terms forbid redistribution): copy them to the GPU machine with the
# repository (rsync, scp, a disk) when it has no internet.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${ITERNET_SHARED_DATA:-../shared/data}"
mkdir -p .whl device_data
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
    monai==1.6.1 pytorch-ignite==0.5.5 fire==0.7.1 termcolor==3.3.0 nibabel==5.4.2
rm -rf device_data/DRIVE
cp -r "$data/DRIVE" device_data/DRIVE
echo "ready: $(ls .whl | wc -l) wheels in .whl/, DRIVE in device_data/DRIVE ($(du -sh device_data | cut -f1))"
