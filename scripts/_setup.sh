# Shared setup for scripts/test and scripts/demo (sourced, not run).
# Installs what is missing and nothing else, so a second run is quick.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc attr file libmagic1 rsync curl psmisc tar libglib2.0-bin shared-mime-info)

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
# Reinstall only when the dependency list changed.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "== installing rcfs and its test tools into .venv"
    piplog="$VENV/pip-install.log"
    if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e "$ROOT[test]"; } >"$piplog" 2>&1; then
        cat "$piplog" >&2
        echo "pip install failed (log: $piplog)" >&2
        exit 1
    fi
    touch "$stamp"
fi
