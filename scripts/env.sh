# Sourced by scripts/demo and scripts/test: a Python 3.13 virtual environment with
# the pinned dependencies in .venv, (re)installed only when a requirements file changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

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

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
  step "Creating the Python 3.13 virtual environment in .venv"
  BASE_PY="$(find_python)"
  rm -rf "$VENV"
  "$BASE_PY" -m venv "$VENV"
fi

STAMP="$VENV/.requirements.sha256"
WANT="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  step "Installing pinned dependencies (requirements-dev.txt)"
  # (grep drops pip's notes about index locations this machine may configure)
  { "$PY" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1; } |
    { grep -v '^WARNING: Location' || true; }
  echo "$WANT" > "$STAMP"
else
  step "Dependencies are up to date in .venv"
fi

# checkov and azure-functions-doctor live in their own environment: checkov pins
# dozens of packages that must not move the app's pinned dependencies.
TOOLS_VENV="$ROOT/.venv-tools"
TOOLS_STAMP="$TOOLS_VENV/.requirements.sha256"
TOOLS_WANT="$(sha256sum requirements-tools.txt | cut -d' ' -f1)"
if [ ! -f "$TOOLS_STAMP" ] || [ "$(cat "$TOOLS_STAMP")" != "$TOOLS_WANT" ]; then
  step "Installing the infrastructure linters into .venv-tools (requirements-tools.txt)"
  rm -rf "$TOOLS_VENV"
  "$PY" -m venv "$TOOLS_VENV"
  { "$TOOLS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-tools.txt 2>&1; } |
    { grep -v '^WARNING: Location' || true; }
  echo "$TOOLS_WANT" > "$TOOLS_STAMP"
else
  step "Infrastructure linters are up to date in .venv-tools"
fi

# Azurite (Blob and Queue storage) for the sync tests, pinned in package-lock.json.
if ! command -v node >/dev/null 2>&1; then
  echo "error: Node.js is required for Azurite (the local Azure Storage emulator); install Node.js 20+" >&2
  exit 1
fi
NPM_STAMP="node_modules/.package-lock.sha256"
NPM_WANT="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -x node_modules/.bin/azurite ] || [ ! -f "$NPM_STAMP" ] || [ "$(cat "$NPM_STAMP")" != "$NPM_WANT" ]; then
  step "Installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$NPM_WANT" > "$NPM_STAMP"
else
  step "Azurite is installed (node_modules)"
fi
export PATH="$VENV/bin:$PATH"
