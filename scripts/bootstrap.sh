#!/usr/bin/env bash
# Creates (once) and refreshes (when pyproject.toml, setup.py or the compiled quality model's sources
# change) the project's own .venv.
# Usage: source scripts/bootstrap.sh [extras]   e.g. "dev"
set -euo pipefail
SQAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SQAL_VENV:-$SQAL_ROOT/.venv}"
EXTRAS="${1:-}"

pick_python() {
    for candidate in "${SQAL_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "sqal: Python 3.11 or newer is required (set SQAL_PYTHON to its path)" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(pick_python)"
    echo "sqal: creating virtual environment in $VENV" >&2
    "$PY" -m venv "$VENV"
fi

spec="."
[ -n "$EXTRAS" ] && spec=".[${EXTRAS}]"
stamp="$VENV/.sqal-installed-${EXTRAS:-base}"
# the gateway's compiled copies of the quality model and the codec are rebuilt when their sources change (setup.py)
want="$(cat "$SQAL_ROOT/pyproject.toml" "$SQAL_ROOT/setup.py" "$SQAL_ROOT/firmware/sqalfw/quality.py" \
    "$SQAL_ROOT/gateway/ingest/quality_c.pxd" "$SQAL_ROOT/firmware/sqalfw/codec.py" \
    "$SQAL_ROOT/gateway/ingest/codec_c.pxd" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    # pip's own output (build warnings, index notices) goes to a log; the user sees steps in words,
    # and the log's tail only when a step fails
    log="$VENV/sqal-install.log"
    : > "$log"
    step() {
        echo "sqal: $1" >&2
        shift
        if ! (cd "$SQAL_ROOT" && "$@") >>"$log" 2>&1; then
            echo "sqal: that step failed; the end of $log:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
    }
    echo "sqal: setting up $VENV (first use, or pyproject.toml or the model sources changed)" >&2
    step "updating pip" "$VENV/bin/python" -m pip install --upgrade pip
    step "installing SQAL and its dependencies${EXTRAS:+ (with the $EXTRAS extras)}; compiling the quality model (a few minutes the first time)" \
        "$VENV/bin/python" -m pip install -e "$spec"
    echo "sqal: environment ready" >&2
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
