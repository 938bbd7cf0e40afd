# One image for every scenebench job and for the runner's host backend; `make image` builds it:
#   docker build --platform linux/amd64 --build-arg VARIANT=cpu -t scenebench:<git sha>-cpu .
#   docker build --platform linux/amd64 --build-arg VARIANT=gpu -t scenebench:<git sha>-gpu .
# linux/amd64 only: TensorFlow 2.21 and ai-edge-litert 2.3.0 publish no Linux aarch64 wheels.
# The GPU variant gets CUDA and cuDNN as pip wheels (tensorflow[and-cuda]), so both variants
# share one base; the GPU node only needs the NVIDIA driver and device plugin.

# Pinned to an exact patch release and Debian release; bump deliberately.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# ---- build: a virtualenv with scenebench and its pinned dependencies -----------------
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
RUN case "${VARIANT}" in cpu|gpu) ;; *) echo "VARIANT must be cpu or gpu, got '${VARIANT}'" >&2; exit 2;; esac
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/scenebench
ENV PATH=/opt/scenebench/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall
# TensorFlow. The package folders are empty at this point, which setuptools accepts.
# `runner` is asked for too: pip only warns if this version of pyproject has no such extra.
COPY pyproject.toml ./
RUN mkdir -p common jobs runner \
 && pip install --upgrade "pip==26.3" \
 && pip install ".[${VARIANT},cluster,runner]" \
 && pip uninstall -y scenebench

COPY common ./common
COPY jobs ./jobs
COPY runner ./runner
RUN pip install --no-deps . \
 && python -m compileall -q /opt/scenebench

# ---- runtime: the virtualenv, the code, a non-root user, nothing else ------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
# The code version every result records (git describe at build time; see mk/cluster.mk).
ARG CODE_VERSION=unknown
# The commit the image is built from (its tag names it too).
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="scenebench" \
      org.opencontainers.image.description="scenebench jobs and runner (${VARIANT})" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.source="https://github.com/scenebench/scenebench"

RUN groupadd --system --gid 10001 scenebench \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/scenebench --create-home \
      --shell /usr/sbin/nologin scenebench
COPY --from=build /opt/scenebench /opt/scenebench

# Pods run with a read-only root filesystem and an emptyDir on /tmp: every cache a library
# writes on its own (Keras, Matplotlib) is pointed there.
ENV PATH=/opt/scenebench/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/scenebench \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    CUDA_CACHE_PATH=/tmp/cuda-cache \
    TF_CPP_MIN_LOG_LEVEL=2 \
    SCENEBENCH_LOG_FORMAT=json \
    SCENEBENCH_CODE_VERSION=${CODE_VERSION}
WORKDIR /home/scenebench
USER 10001:10001

# No default step: every pod names its job (python -m jobs.<step>, python -m runner serve).
CMD ["python", "-m", "jobs.pipeline", "--help"]
