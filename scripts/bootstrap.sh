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
  say() { echo "bootstrap: $*" >&2; }
  say "installing into .venv (first start, or pyproject.toml changed): PyTorch 2.13, then the service and its"
  say "dependencies${extras:+ and the test extras}; a first install takes about 2-4 minutes"
  say "upgrading pip in .venv (a few seconds)"
  .venv/bin/python -m pip install -q --upgrade pip
  pip_install() { .venv/bin/python -m pip install --progress-bar on "$@"; }
  if .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    say "PyTorch 2.13.0 is already installed"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "a GPU is present: installing PyTorch 2.13.0 with CUDA (a large download)"
    pip_install "torch==2.13.0"
  else
    # No GPU: the CPU build only. PyPI's Linux (and Windows) torch is the multi-GB CUDA build, so ask for the
    # "+cpu" local version, which only CPU builds carry (PyTorch's CPU index, or a local wheel pip is configured
    # with, e.g. find-links): no source can hand pip a CUDA build for it, so none is ever downloaded. macOS
    # wheels have no CUDA and no "+cpu" label.
    cpu_torch="torch==2.13.0+cpu"
    [ "$(uname -s)" = Darwin ] && cpu_torch="torch==2.13.0"
    say "no GPU: installing the CPU build of PyTorch 2.13.0 ($cpu_torch, about 200 MB to download)"
    pip_install --retries 1 --timeout 15 --extra-index-url https://download.pytorch.org/whl/cpu "$cpu_torch" \
      || { say "no CPU build of PyTorch 2.13.0 could be found: install one and run again"; exit 1; }
    .venv/bin/python -c "import torch, sys; sys.exit(torch.version.cuda is not None)" \
      || { say "refusing a CUDA build of PyTorch on a machine without a GPU"; exit 1; }
  fi
  # torch stays the version just installed: no dependency may replace it with another build.
  constraint=$(mktemp)
  trap 'rm -f "$constraint"' EXIT
  .venv/bin/python -c "import torch; print('torch==' + torch.__version__)" > "$constraint"
  say "installing the service and its dependencies (Celery, SQLAlchemy, Gradio, ...: about a minute)"
  pip_install -c "$constraint" -e ".$extras"
  touch "$stamp$extras"
  say "installed"
fi
if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
      apt-get install -y -q chromium >/dev/null 2>&1; }) || echo "bootstrap: could not install chromium; browser tests will be skipped" >&2
fi
