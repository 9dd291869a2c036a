# Shared setup for scripts/test and scripts/demo (sourced, not run).
# Installs what is missing and nothing else, so a second run is quick.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

# Every program a test runs comes from here or from Debian's base system:
# tests/test_setup_installs.py finds them in the code and fails on one that does not.
# redis-server, redis-tools: the fleet tests' real Redis (issue 18; the tests start their own on a socket)
# git: the benchmarks label their results with the commit
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc attr file libmagic1 libglib2.0-bin shared-mime-info rsync curl psmisc tar strace
              redis-server redis-tools unzip systemd git)

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "rcfs needs Python 3.11 or newer; '$PY' is $("$PY" --version 2>&1 || echo missing)" >&2
    exit 1
fi
# Debian's own python3 needs these to build a venv and compile pyfuse3.
if [ "$(command -v "$PY")" = /usr/bin/python3 ]; then
    for pkg in python3-venv python3-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
    done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "== installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp="$VENV/.rcfs-installed"
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
fi
# Exact versions from the lock (constraints.txt): a new release of httpx, httpcore or h11
# cannot change what a fresh install does (rcfs/api/tuning.py depends on their internals).
LOCK="$ROOT/constraints.txt"
# Reinstall only when the dependency list or the lock changed.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$LOCK" -nt "$stamp" ]; then
    echo "== installing rcfs, its emulator and its test tools into .venv (versions from constraints.txt)"
    piplog="$VENV/pip-install.log"
    if ! { "$VENV/bin/pip" install -q -c "$LOCK" --upgrade pip \
           && "$VENV/bin/pip" install -q -c "$LOCK" -e "$ROOT[emulator,test]"; } >"$piplog" 2>&1; then
        cat "$piplog" >&2
        echo "pip install failed (log: $piplog)" >&2
        exit 1
    fi
    touch "$stamp"
fi
