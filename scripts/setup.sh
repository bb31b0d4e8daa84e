#!/usr/bin/env bash
# Installs what Flyt needs to build and test, from Debian/Ubuntu packages, and finds the CUDA 13
# toolkit. Idempotent: packages already installed are skipped, and nothing is fetched when all are.
# Usage: scripts/setup.sh [--quiet]
set -euo pipefail

quiet=0
[[ "${1:-}" == "--quiet" ]] && quiet=1
say() { [[ $quiet == 1 ]] || echo "setup: $*"; }

packages=(
  build-essential cmake pkg-config python3
  capnproto libcapnp-dev
  iceoryx libiceoryx-posh-dev libiceoryx-hoofs-dev libacl1-dev  # iceoryx's RouDi headers include <sys/acl.h>
  libtomlplusplus-dev libspdlog-dev libfmt-dev libsqlite3-dev libssl-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgl-dev libegl-dev libvdpau-dev  # CUDA's GL/EGL/VDPAU interop headers include theirs (api/generate.py)
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  say "installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null; then
      sudo=(sudo)
    else
      echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "all ${#packages[@]} Debian packages present"
fi

# The CUDA 13 toolkit is not a Debian package: find the one installed on this machine.
candidates=()
[[ -n "${CUDA_HOME:-}" ]] && candidates+=("$CUDA_HOME")
[[ -n "${CUDA_PATH:-}" ]] && candidates+=("$CUDA_PATH")
if command -v nvcc >/dev/null; then candidates+=("$(dirname "$(dirname "$(command -v nvcc)")")"); fi
candidates+=(/usr/local/cuda /usr/local/cuda-13* /opt/cuda /usr/lib/cuda)

found=""
looked=()
for dir in "${candidates[@]}"; do
  [[ -e "$dir" ]] || { looked+=("$dir (absent)"); continue; }
  nvcc="$dir/bin/nvcc"
  if [[ ! -x "$nvcc" ]]; then looked+=("$dir (no bin/nvcc)"); continue; fi
  version=$("$nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1.\2/p')
  if [[ "${version%%.*}" != 13 ]]; then looked+=("$dir (nvcc $version, need 13.x)"); continue; fi
  if [[ ! -f "$dir/include/cuda_runtime_api.h" ]]; then looked+=("$dir (no include/cuda_runtime_api.h)"); continue; fi
  found="$dir"
  break
done

if [[ -z "$found" ]]; then
  echo "setup: the CUDA 13 toolkit (nvcc, headers) was not found. Looked in:" >&2
  printf '  %s\n' "${looked[@]}" >&2
  echo "Install NVIDIA's CUDA 13 toolkit, or point CUDA_HOME at it." >&2
  exit 1
fi
say "CUDA $version toolkit at $found"
