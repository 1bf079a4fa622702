#!/usr/bin/env bash
# Create .venv and install the project (and, with --test, the test extras and Chromium). Idempotent and quick
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.s2s-installed
extras=""
[ "$want_test" = 1 ] && extras="[test]"
installed="$stamp$extras"
[ "$want_test" = 0 ] && [ -f "$stamp[test]" ] && installed="$stamp[test]"  # a test install has it all
if [ ! -f "$installed" ] || [ pyproject.toml -nt "$installed" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of PyTorch first, so nothing pulls a multi-GB CUDA build on a machine without a GPU.
  .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch==2.13.0" \
      --index-url https://download.pytorch.org/whl/cpu
  .venv/bin/python -m pip install -q -e ".$extras"
  touch "$stamp$extras"
fi
if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
      apt-get install -y -q chromium >/dev/null 2>&1; }) || echo "bootstrap: could not install chromium; browser tests will be skipped" >&2
fi
