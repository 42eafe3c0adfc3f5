# Sourced by .ci/run: fetch Debian bookworm's NVRTC (CUDA 11.8, from the
# non-free archive) and the cuobjdump / ptxas / nvdisasm of its
# nvidia-cuda-toolkit into a cache folder, with a private apt
# configuration (nothing is installed system-wide), and point the tests at
# them: backend/cuda compiles the kernels for sm_80 and sm_90 with it.
#
# The extracted files are cached by package version under
# $MINITRON_CI_CACHE (default ~/.cache/minitron-ci), so a rerun downloads
# nothing; delete the folder to pick up a newer version.
# MINITRON_DEBIAN_MIRROR replaces http://deb.debian.org/debian. Every
# network step has a timeout and retries; a failure stops CI with a message.

nvrtc_fetch() {
  local cache=${MINITRON_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/minitron-ci}
  local stamp
  stamp=$(ls -d "$cache"/nvrtc-*/.complete 2>/dev/null | sort -V | tail -1)
  if [ -z "$stamp" ]; then
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
      echo ".ci/run: apt-get and dpkg-deb are needed to fetch Debian's NVRTC" >&2
      return 1
    }
    local apt=$cache/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
    echo "deb ${MINITRON_DEBIAN_MIRROR:-http://deb.debian.org/debian} bookworm non-free" >"$apt/sources.list"
    local opts=(-q -o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt/lists"
      -o "Dir::Cache=$apt/cache" -o Acquire::Retries=3 -o Acquire::http::Timeout=30 -o APT::Sandbox::User="$(id -un)")
    echo "fetching Debian's NVRTC (non-free) into $cache"
    timeout 300 apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || {
      echo ".ci/run: apt-get update of Debian's non-free archive failed (network?); see $apt/update.log:" >&2
      tail -5 "$apt/update.log" >&2
      return 1
    }
    local ver
    ver=$(apt-cache "${opts[@]}" show --no-all-versions libnvrtc11.2 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$ver" ] || {
      echo ".ci/run: no libnvrtc11.2 in Debian's non-free archive; apt-get update said:" >&2
      grep -E '^(W|E):' "$apt/update.log" | head -5 >&2
      return 1
    }
    rm -f "$apt/debs"/*.deb
    (cd "$apt/debs" && timeout 900 apt-get "${opts[@]}" download "libnvrtc11.2=$ver" "libnvrtc-builtins11.8=$ver" "nvidia-cuda-toolkit=$ver") >"$apt/download.log" 2>&1 || {
      echo ".ci/run: downloading Debian's NVRTC $ver failed (network?); see $apt/download.log:" >&2
      tail -5 "$apt/download.log" >&2
      return 1
    }
    local root=$cache/nvrtc-${ver//[^A-Za-z0-9.+-]/_}
    rm -rf "$root.tmp" && mkdir -p "$root.tmp"
    local d
    for d in "$apt/debs"/libnvrtc*.deb; do
      dpkg-deb -x "$d" "$root.tmp" || return 1
    done
    # Only the machine-code tools of the 84 MB toolkit.
    dpkg-deb --fsys-tarfile "$apt/debs"/nvidia-cuda-toolkit_*.deb |
      tar -x -C "$root.tmp" ./usr/bin/cuobjdump ./usr/bin/ptxas ./usr/bin/nvdisasm || return 1
    rm -rf "$root" && mv "$root.tmp" "$root" && touch "$root/.complete" && rm -f "$apt/debs"/*.deb
    stamp=$root/.complete
  fi
  local root=${stamp%/.complete}
  export MINITRON_TEST_NVRTC_DIR=$root/usr/lib/x86_64-linux-gnu
  export MINITRON_TEST_CUDA_BIN=$root/usr/bin
  export MINITRON_REQUIRE_NVRTC=1
  echo "NVRTC for the kernel compile test: $(ls "$MINITRON_TEST_NVRTC_DIR"/libnvrtc.so.* | head -1) ($(basename "$root"))"
}

nvrtc_fetch || exit 1
