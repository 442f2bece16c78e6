# syntax=docker/dockerfile:1
# EvoForge evaluator image: what DockerSandbox runs untrusted candidate programs in.
#
#   docker build -f docker/evaluator.Dockerfile -t evoforge-eval:latest .                 # CPU
#   docker build -f docker/evaluator.Dockerfile --target gpu -t evoforge-eval-gpu:latest .  # + torch/CUDA
#
# Then point the sandbox at it: DockerSandbox(image="evoforge-eval:latest",
# images_per_task={"some_gpu_task": "evoforge-eval-gpu:latest"}). See docs/containers.md.
#
# The image only provides an interpreter and libraries. Everything that makes a run safe is set
# per container by DockerSandbox: no network, read-only root, tmpfs /tmp, memory/pids/CPU limits,
# no capabilities, no-new-privileges, uid 65534, a fresh environment. DockerSandbox also copies
# the current sandbox/harness.py into /sbx on every run, so the copy baked in here (for manual
# use: `python3 /opt/evoforge/harness.py req.json resp.json`) can never be stale for the service.
#
# CI cannot build this (no registry access there); it uses the equivalent debootstrap image from
# scripts/setup_podman.sh (Debian bookworm python3 + numpy + scipy on OpenBLAS).

FROM python:3.11-slim-bookworm AS cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

# Libraries a candidate may import. Keep in step with the tasks' contexts (what the LLM is told
# it can use); nothing here may hold data the candidate must not see (labels, test sets).
RUN pip install "numpy>=1.26,<3" "scipy>=1.11" \
 && rm -rf /root/.cache

# /sbx: mount point of the per-run volume (harness.py, request.json, out/ owned by 65534).
# uid/gid 65534 is Debian's nobody/nogroup: no home, no shell, owns nothing in the image.
RUN mkdir -p /sbx /opt/evoforge \
 && chmod 0755 /sbx
COPY sandbox/harness.py /opt/evoforge/harness.py
RUN chmod 0444 /opt/evoforge/harness.py \
 && python3 -c "import numpy, scipy; print('numpy', numpy.__version__, 'scipy', scipy.__version__)"

USER 65534:65534
WORKDIR /tmp
CMD ["python3"]

# GPU variant: same image plus PyTorch (CUDA wheels). Run it on a host with the NVIDIA
# Container Toolkit; DockerSandbox(gpu=True) adds the device request (all GPUs).
FROM cpu AS gpu
USER root
RUN pip install "torch>=2.2" && rm -rf /root/.cache
USER 65534:65534

# Default target: the CPU image.
FROM cpu
