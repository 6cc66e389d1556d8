#!/usr/bin/env bash
# Builds llama-cpp-python from source with a pinned, portable CPU instruction set and installs it
# into the given venv. Never -DGGML_NATIVE=ON: a native build on a CPU that advertises AMX/AVX-512
# used instructions the process could not run (SIGILL). The wheel is cached per (version, variant)
# outside the repo, so a build made with other flags (pip's own cache ignores CMAKE_ARGS) is never reused.
#
# usage: tools/install_llama_cpp.sh PYTHON VERSION [VARIANT]
#   VARIANT: x86-64-v3 (AVX2+FMA+F16C, the default on x86 CPUs that have them), x86-64-v2 (SSE4.2 only),
#            generic (the compiler's defaults; other architectures). CBTCOMPARE_LLAMA_VARIANT overrides.
set -euo pipefail
py=$1
version=$2
variant=${3:-${CBTCOMPARE_LLAMA_VARIANT:-auto}}

cpu_has() { grep -qw "$1" /proc/cpuinfo 2>/dev/null; }

if [ "$variant" = auto ]; then
  case "$(uname -m)" in
    x86_64|amd64)
      if cpu_has avx2 && cpu_has fma && cpu_has f16c; then variant=x86-64-v3; else variant=x86-64-v2; fi ;;
    *) variant=generic ;;
  esac
fi

off_wide="-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX_VNNI=OFF"
case "$variant" in
  x86-64-v3) flags="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $off_wide" ;;
  x86-64-v2) flags="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF $off_wide" ;;
  generic)   flags="-DGGML_NATIVE=OFF" ;;
  *) echo "unknown llama.cpp build variant '$variant' (x86-64-v3, x86-64-v2, generic)" >&2; exit 2 ;;
esac
flags="$flags -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"

ensure_compiler() {
  command -v c++ >/dev/null && command -v cc >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "no C/C++ compiler: installing Debian's g++"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ make >/dev/null
  else
    echo "llama-cpp-python is built from source and needs a C/C++ compiler (install g++ or clang)" >&2; exit 1
  fi
}

cache=${CBTCOMPARE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cbtcompare/wheels}/llama-cpp-python-$version-$variant
if ! ls "$cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  ensure_compiler
  echo "building llama-cpp-python $version for $variant (5-8 minutes on 2 cores)..."
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" FORCE_CMAKE=1 \
    "$py" -m pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
    -w "$cache.tmp" "llama-cpp-python==$version"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
"$py" -m pip install --quiet --force-reinstall --no-deps "$cache"/llama_cpp_python-*.whl
echo "$variant" > "$(dirname "$py")/../.llama-variant"
echo "llama-cpp-python $version installed ($variant build from $cache)"
