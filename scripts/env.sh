# Sourced by the scripts: a Python 3.13 virtual environment with the pinned dependencies in
# .venv and Azurite in node_modules, (re)installed only when a requirements file changed.
# The infrastructure linters (.venv-tools, checkov) and headless Chromium (apt-get, as root)
# are installed only for scripts that set NEED_TOOLS=1 (scripts/test). Each install prints one progress line; its full output is kept
# in .run/install.log and printed only when it fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '==> %s\n' "$*"; }

# run_install "what" command...: one line, the command's output only on failure.
run_install() {
  local what="$1"; shift
  mkdir -p "$ROOT/.run"
  local log="$ROOT/.run/install.log"
  printf '==> %s ... ' "$what"
  if "$@" >"$log" 2>&1; then
    echo "done"
  else
    local code=$?
    echo "FAILED (exit $code)"
    cat "$log" >&2
    echo "(this output is also in .run/install.log)" >&2
    exit "$code"
  fi
}

find_python() {
  local candidate
  for candidate in python3.13 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  # pyenv installs that are not the selected version
  if command -v pyenv >/dev/null 2>&1; then
    local version
    version="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.|$)' | tail -n 1 || true)"
    if [ -n "$version" ]; then
      echo "$(pyenv root)/versions/$version/bin/python3.13"; return 0
    fi
  fi
  echo "error: Python 3.13 is required (the Functions Python 3.13 runtime); install it and retry" >&2
  return 1
}

# An install that is a symlink (shared with another checkout) is never reinstalled in place: npm ci
# empties the link's target, and pip would change the other checkout's packages. When this checkout
# needs a different install, the link is removed (the other checkout's install is left as it was)
# and this checkout gets its own.
unshare() {
  if [ -L "$1" ]; then
    printf '==> %s links to %s, installed for other requirements: installing this checkout'"'"'s own\n' \
      "${1#"$ROOT/"}" "$(readlink "$1")"
    rm "$1"
  fi
}

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
  BASE_PY="$(find_python)"
  rm -rf "$VENV"
  run_install "Creating the Python 3.13 virtual environment in .venv" "$BASE_PY" -m venv "$VENV"
fi

STAMP="$VENV/.requirements.sha256"
WANT="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  if [ -L "$VENV" ]; then
    unshare "$VENV"
    run_install "Creating the Python 3.13 virtual environment in .venv" "$(find_python)" -m venv "$VENV"
  fi
  run_install "Installing pinned dependencies into .venv (requirements-dev.txt)" \
    "$PY" -m pip install --disable-pip-version-check -r requirements-dev.txt
  echo "$WANT" > "$STAMP"
fi

# checkov and azure-functions-doctor live in their own environment: checkov pins
# dozens of packages that must not move the app's pinned dependencies.
if [ "${NEED_TOOLS:-0}" = 1 ]; then
  TOOLS_VENV="$ROOT/.venv-tools"
  TOOLS_STAMP="$TOOLS_VENV/.requirements.sha256"
  TOOLS_WANT="$(sha256sum requirements-tools.txt | cut -d' ' -f1)"
  if [ ! -f "$TOOLS_STAMP" ] || [ "$(cat "$TOOLS_STAMP")" != "$TOOLS_WANT" ]; then
    rm -rf "$TOOLS_VENV"
    run_install "Creating .venv-tools for the infrastructure linters" "$PY" -m venv "$TOOLS_VENV"
    run_install "Installing the infrastructure linters into .venv-tools (requirements-tools.txt)" \
      "$TOOLS_VENV/bin/python" -m pip install --disable-pip-version-check -r requirements-tools.txt
    echo "$TOOLS_WANT" > "$TOOLS_STAMP"
  fi
fi

# Headless Chromium (Debian's package) opens ./scripts/serve's /docs page in the tests
# (tests/integration/test_docs_page.py). Installed when missing; where it cannot be, the
# test fails and says how to install it.
if [ "${NEED_TOOLS:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    run_install "Installing Chromium for the /docs page test (apt-get install chromium)" \
      env DEBIAN_FRONTEND=noninteractive bash -c 'apt-get update && apt-get install -y chromium'
  else
    echo "warning: Chromium is missing and installing it needs root and apt-get; the /docs page test will fail." \
      "Install it: sudo apt-get install -y chromium" >&2
  fi
fi

# Azurite (Blob and Queue storage), pinned in package-lock.json.
if ! command -v node >/dev/null 2>&1; then
  echo "error: Node.js is required for Azurite (the local Azure Storage emulator); install Node.js 20+" >&2
  exit 1
fi
NPM_STAMP="node_modules/.package-lock.sha256"
NPM_WANT="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -x node_modules/.bin/azurite ] || [ ! -f "$NPM_STAMP" ] || [ "$(cat "$NPM_STAMP")" != "$NPM_WANT" ]; then
  unshare "$ROOT/node_modules"
  run_install "Installing Azurite into node_modules (npm ci)" npm ci --no-audit --no-fund
  echo "$NPM_WANT" > "$NPM_STAMP"
fi
export PATH="$VENV/bin:$PATH"
