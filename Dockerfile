# One image for both roles: the voice server (default) and lane workers (`kombain worker`).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KOMBAIN_HOST=0.0.0.0 KOMBAIN_PORT=8000 KOMBAIN_DATA_DIR=/data

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
RUN pip install --index-url ${TORCH_INDEX} --extra-index-url https://pypi.org/simple 'torch==2.13.0' \
    && pip install '.[models,lane]' \
    && pip install --no-deps 'silero-vad==6.2.3' 'pipecat-ai==1.14.0'

RUN useradd --system --home /data kombain && mkdir -p /data && chown kombain /data
USER kombain
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["kombain", "serve"]
