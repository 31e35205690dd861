# CPU image for `tunekit serve`: small encoders and tiny causal LMs answer fast enough on CPU; for
# LLMs on GPUs use serve.backend vllm (see README) on a CUDA base image instead.
#   docker build -t tunekit .
#   docker run -p 8000:8000 -v $PWD/tunekit-workspace:/srv/tunekit-workspace tunekit \
#       serve --model NAME@champion --host 0.0.0.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# The CPU build of PyTorch first: an unpinned torch pulls gigabytes of CUDA packages.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" || pip install "torch==2.13.0"

WORKDIR /opt/tunekit
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 10001 tunekit

USER tunekit
WORKDIR /srv
EXPOSE 8000
# uvicorn stops accepting on SIGTERM and drains in-flight requests; the request log is flushed last.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["tunekit"]
CMD ["serve", "--model", "tunekit-workspace/model", "--host", "0.0.0.0"]
