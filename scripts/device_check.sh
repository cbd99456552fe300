#!/usr/bin/env bash
# The trained roles' GPU checks in one go, for a lent GPU machine with torch, transformers
# and peft but no Ray, vLLM or DeepSpeed (README: "The trained roles on a GPU").
#
#   scripts/device_check.sh --prepare [PYTHON_VERSION]   here: wheels of what such a machine
#                                                         may lack, into .whl/ (~46 MB)
#   scripts/device_check.sh                               there, from the repository root,
#                                                         with .whl/ carried along
#
# There it installs from .whl/ only what does not import, runs the `gpu`-marked tests of
# tests/unit/test_on_device.py and the learner bench at the bench's batch and at 64 x 8
# sequences (micro-batches of 16, one pass per mini-batch, and passes cut by tokens).
# Logs go to $OUT (else ./device_out).
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDED=(pydantic:pydantic yaml:pyyaml pyarrow:pyarrow pytest:pytest)  # module:package

if [[ "${1:-}" == "--prepare" ]]; then
    pyver="${2:-3.12}"
    pip=.venv/bin/pip
    [[ -x $pip ]] || pip="python3 -m pip"
    $pip download --quiet --only-binary=:all: --platform manylinux2014_x86_64 \
        --python-version "$pyver" --dest .whl "${NEEDED[@]#*:}"
    echo "wheels for Python $pyver in .whl/ ($(du -sh .whl | cut -f1)); carry .whl to the device"
    exit 0
fi

out="${OUT:-device_out}"
mkdir -p "$out"
py="${PYTHON:-python3}"
for needed in "${NEEDED[@]}"; do
    module=${needed%%:*} package=${needed#*:}
    if ! "$py" -c "import $module" 2>/dev/null; then
        [[ -d .whl ]] || { echo "$module is missing and there is no .whl/ (run --prepare here first)"; exit 1; }
        "$py" -m pip install --quiet --no-index --find-links .whl "$package"
    fi
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$out/device.txt"
if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device here: the gpu tests would skip and the bench is for a GPU" | tee -a "$out/device.txt"
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >>"$out/device.txt" 2>/dev/null || true

status=0
"$py" -m pytest -q -m gpu -p no:cacheprovider tests/unit/test_on_device.py 2>&1 | tee "$out/gpu_tests.log" \
    || status=1
bench=(bench/bench_learner_device.py --attention sdpa)
"$py" "${bench[@]}" 2>&1 | tee "$out/bench_32.log" || status=1
"$py" "${bench[@]}" --prompts 64 --samples 8 2>&1 | tee "$out/bench_512_mbs16.log" || status=1
"$py" "${bench[@]}" --prompts 64 --samples 8 --micro-batch-size 512 2>&1 | tee "$out/bench_512_mbs512.log" \
    || status=1
"$py" "${bench[@]}" --prompts 64 --samples 8 --max-tokens-per-pass 16384 2>&1 \
    | tee "$out/bench_512_tokens16384.log" || status=1
exit $status
