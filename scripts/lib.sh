# Shared helpers for the project's scripts. Sourced, not run.

# Tools installed by setup.sh: cargo's bin directory and the project's own .tools/.
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

if [ -t 1 ]; then
  _blue=$'\033[1;34m' _green=$'\033[1;32m' _red=$'\033[1;31m' _plain=$'\033[0m'
else
  _blue='' _green='' _red='' _plain=''
fi
step() { printf '%s==>%s %s\n' "$_blue" "$_plain" "$*"; }
ok() { printf '%s ok%s %s\n' "$_green" "$_plain" "$*"; }
fail() { printf '%serror:%s %s\n' "$_red" "$_plain" "$*" >&2; exit 1; }

# apt_install PACKAGE...: installs Debian packages, as root or through sudo, waiting for
# another apt run to finish rather than failing on its lock.
apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "need root or sudo to install: $*"
    sudo=(sudo)
  fi
  step "installing Debian packages: $*"
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
  if ! "${apt[@]}" install -y --no-install-recommends "$@"; then
    step "refreshing package lists and retrying"
    "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends "$@"
  fi
}

# build_web_client: the release build of the web client into dist/, then a brotli and a gzip
# copy of each file next to it, which the relay serves to browsers that accept them (see
# backend/src/http/web_client.rs): compressed once here, never per request. Every step
# checks its own result, since callers may run it where `set -e` does not apply.
build_web_client() {
  trunk build --release || return
  local file
  while IFS= read -r -d '' file; do
    gzip -9 -n -k -f "$file" && brotli -q 11 -k -f "$file" || return
  done < <(find dist -type f \( -name '*.wasm' -o -name '*.js' -o -name '*.css' \
    -o -name '*.html' -o -name '*.svg' -o -name '*.json' \) -print0)
}
