#!/usr/bin/env bash
# Install what the tests need (Debian packages, a virtualenv) and run every check:
# ruff, mypy, the completions check and the whole pytest suite, integration tests included.
# Usage: bash tests/run.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openssh-server openssh-client tesseract-ocr tesseract-ocr-eng
              tesseract-ocr-chi-sim tesseract-ocr-osd fonts-wqy-zenhei parallel rsync tmux
              python3-venv fonts-dejavu-core)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=${EDGECTL_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"

export EDGECTL_REQUIRE_FLEET=1   # integration tests fail, never skip, when sshd cannot start
echo "== ruff"
"$VENV/bin/ruff" check edgectl tests
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
"$VENV/bin/pytest" -q "$@"
