# Sourced first by every script: `--help` prints the script's header comment (what it does,
# what it starts, what it leaves behind) and, when .venv exists, the Python command's options,
# without installing anything.
help_or_continue() {
  local script="$1" module="$2"; shift 2
  local arg
  for arg in "$@"; do
    if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then
      sed -n '2,/^[^#]/p' "$script" | grep '^#' | sed 's/^# \{0,1\}//'
      local root; root="$(cd "$(dirname "$script")/.." && pwd)"
      if [ -n "$module" ] && [ -x "$root/.venv/bin/python" ]; then
        echo
        (cd "$root" && .venv/bin/python -m "$module" --help | sed -n '/^usage:/,/^$/p;/^options:/,$p')
      fi
      exit 0
    fi
  done
}
