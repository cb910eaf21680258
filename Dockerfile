# whitevec service image (CPU). Untested here: this workplace has no Docker engine.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORKDIR /app
# torch first, from the CPU index, so the project's torch>=2.2 requirement installs nothing more.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY models ./models
COPY index ./index
COPY service ./service
# EXTRAS="[milvus,postgres]" for replicas (docker-compose's milvus profile); add ",ray" for Ray.
ARG EXTRAS=""
RUN pip install ".${EXTRAS}"
EXPOSE 8000
VOLUME ["/data"]
ENV WHITEVEC_DATA_DIR=/data
CMD ["whitevec", "serve", "--demo", "--host", "0.0.0.0", "--port", "8000"]
