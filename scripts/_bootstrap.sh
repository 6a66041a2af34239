# Sourced by scripts/test, scripts/demo and scripts/bench: installs what is missing.
# Debian packages first (needs root or sudo), then a project virtualenv in .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

csfs_apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "csfs: installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}

csfs_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.csfs-installed-$extras"
    if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
        echo "csfs: installing Python packages into .venv" >&2
        "$VENV/bin/pip" install -q --upgrade pip >&2 2>/dev/null || true
        "$VENV/bin/pip" install -q -e "$ROOT[$extras]" >&2
        touch "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}
