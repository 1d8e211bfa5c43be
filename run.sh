#!/usr/bin/env bash
# The two commands of the quick start:
#   ./run.sh demo   install what is needed, then start the CRM on SQLite with the shipped blueprint and demo data
#   ./run.sh test   install what is needed, type-check engine/ and cli.py (mypy --strict), then run the
#                   whole test suite (SQLite and PostgreSQL); a type error fails it before any test runs
#   ./run.sh crm …  any `crm` command (crm outbox list, crm explain lead 1, crm user add …) without
#                   activating .venv; it uses the same crm.sqlite as the demo unless --db says otherwise
# Extra arguments go to `crm demo`, to pytest or to `crm`.
set -euo pipefail
cd "$(dirname "$0")"

python_bin() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "run.sh: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

# Create .venv and install the project (with the given extra) unless pyproject.toml is unchanged since.
ensure_installed() {
  local extra="$1" stamp=".venv/.installed-${1:-base}"
  if [ ! -x .venv/bin/python ]; then
    "$(python_bin)" -m venv .venv
  fi
  local want
  want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extra:+[$extra]}"
    echo "$want" > "$stamp"
  fi
  # The engine is installed editable, so pip compiled none of it; where PYTHONDONTWRITEBYTECODE
  # is set, every start compiled all of it again (a `crm serve` start: 1.3–1.8 s, 0.8 s compiled).
  .venv/bin/python -m compileall -q -j0 engine cli.py >/dev/null
}

case "${1:-}" in
  demo)
    ensure_installed ""
    shift
    exec .venv/bin/crm demo "$@"
    ;;
  test)
    ensure_installed test
    # The example plugins are exercised by tests/test_widgets_plugin.py and tests/test_plugins.py.
    for example in star_rating:crm-star-rating discord:crm-discord; do
      if ! .venv/bin/python -c 'import sys, importlib.metadata as m; sys.exit(sys.argv[1] not in
          {e.name for e in m.entry_points(group="blueprint_crm")})' "${example%%:*}" 2>/dev/null; then
        .venv/bin/python -m pip install --quiet -e "examples/${example#*:}"
      fi
    done
    # Browser tests drive Debian's Chromium (never a downloaded one); CI installs it when absent.
    if [ "${CI:-}" = "true" ] && [ ! -x /usr/bin/chromium ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-wqy-microhei
    fi
    shift
    # pyproject.toml's [tool.mypy] holds the settings (strict) and the files (engine/, cli.py).
    .venv/bin/python -m mypy
    exec .venv/bin/python -m pytest "$@"
    ;;
  crm)
    ensure_installed ""
    shift
    exec .venv/bin/crm "$@"
    ;;
  *)
    echo "usage: ./run.sh demo [crm demo options] | ./run.sh test [pytest options] | ./run.sh crm COMMAND [options]" >&2
    exit 2
    ;;
esac
