#!/usr/bin/env bash
# Installs what building, running and testing the relay needs, skipping whatever is already
# present at the right version. Safe to run again and again.
#
#   scripts/setup.sh          tools to build and run: wasm32 target, trunk, wasm-bindgen, wasm-opt,
#                             brotli (the web client is served precompressed)
#   scripts/setup.sh --test   also what the tests need: Chromium, ChromeDriver, and axe-core
#                             (accessibility checks in the end-to-end test) in .tools/; PHP
#                             with curl (to run examples/php against a live relay); and a
#                             Python venv in .tools/venv with schemathesis and websockets (the
#                             HTTP API's conformance and examples tests)
#
# Versions are pinned on purpose; see docs/toolchain.md for why (trunk 0.22 needs a newer
# rustc, Debian's binaryen 108 silently breaks the page, wasm-bindgen must match the crate).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

TRUNK_VERSION=0.21.14
WASM_BINDGEN_VERSION=0.2.129
BINARYEN_VERSION=132.0.0
AXE_CORE_VERSION=4.14.1

with_test_tools=false
for arg in "$@"; do
  case "$arg" in
    --test) with_test_tools=true ;;
    *) fail "unknown option $arg (expected --test)" ;;
  esac
done

command -v cargo >/dev/null && command -v rustup >/dev/null ||
  fail "Rust is missing: install it with rustup (https://rustup.rs), then run this again."

if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  ok "wasm32-unknown-unknown target present"
else
  step "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    step "adding rustup component $component"
    rustup component add "$component"
  fi
done

# cargo_tool BINARY VERSION CRATE: installs CRATE at VERSION unless BINARY reports it.
cargo_tool() {
  local binary=$1 version=$2 crate=$3
  if "$binary" --version 2>/dev/null | grep -q " $version\$"; then
    ok "$binary $version present"
  else
    step "installing $crate $version (a few minutes, once)"
    cargo install "$crate" --version "=$version" --locked
  fi
}
cargo_tool trunk "$TRUNK_VERSION" trunk
cargo_tool wasm-bindgen "$WASM_BINDGEN_VERSION" wasm-bindgen-cli

# wasm-opt from npm's binaryen, kept inside the project (.tools/, git-ignored).
if .tools/node_modules/.bin/wasm-opt --version 2>/dev/null | grep -q "version ${BINARYEN_VERSION%%.*}"; then
  ok "wasm-opt ${BINARYEN_VERSION%%.*} present"
else
  command -v npm >/dev/null || apt_install nodejs npm
  step "installing binaryen $BINARYEN_VERSION (wasm-opt) into .tools/"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "binaryen@$BINARYEN_VERSION"
fi

# brotli and gzip compress the built web client once (scripts/lib.sh's build_web_client).
if command -v brotli >/dev/null && command -v gzip >/dev/null; then
  ok "brotli and gzip present"
else
  apt_install brotli gzip
fi

if $with_test_tools; then
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    ok "chromium and chromedriver present"
  else
    apt_install chromium chromium-driver
  fi
  # Debian's redis-server: the Redis engine's tests start their own servers from it (on free
  # loopback ports, each with a directory of its own); nothing runs as a service.
  if command -v redis-server >/dev/null; then
    ok "redis-server present"
  else
    apt_install redis-server
  fi
  # axe-core, injected into the page by the end-to-end test, kept inside the project too.
  axe_package=.tools/node_modules/axe-core/package.json
  if [ -f "$axe_package" ] && grep -q "\"version\": \"$AXE_CORE_VERSION\"" "$axe_package"; then
    ok "axe-core $AXE_CORE_VERSION present"
  else
    command -v npm >/dev/null || apt_install nodejs npm
    step "installing axe-core $AXE_CORE_VERSION into .tools/"
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --loglevel=error "axe-core@$AXE_CORE_VERSION"
  fi

  # PHP and its curl extension: the test runs examples/php/publish.php as a tutorial reader
  # would. Debian's packages, whatever version Debian ships (the example needs PHP 8.0+).
  if command -v php >/dev/null && php -m 2>/dev/null | grep -qx curl; then
    ok "php with curl present"
  else
    apt_install php-cli php-curl
  fi

  # The HTTP API tests' Python packages (schemathesis, websockets), in a venv inside the
  # project so that nothing is installed into the system's Python. Every version is pinned
  # in scripts/api_test_requirements.txt; a copy of the file inside the venv records what was
  # installed, so an unchanged file costs nothing and a changed one reinstalls.
  venv=.tools/venv
  requirements=scripts/api_test_requirements.txt
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/installed-requirements.txt"; then
    ok "Python test packages present ($venv)"
  else
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
      apt_install python3-venv
    fi
    step "installing the HTTP API tests' Python packages into $venv"
    mkdir -p .tools
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
  fi
fi
ok "setup complete"
