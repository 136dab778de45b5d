# The CPU image: the aggregator, the `cpu` profile's worker, and `jobs/submit.py` for machines without a
# Python environment. torch from PyTorch's CPU index (PyPI's Linux wheels would bring gigabytes of CUDA
# libraries); versions as in requirements-cpu.txt, so this image runs what CI tests.
# Built by compose (`docker compose build aggregator`) or:
#   docker build -f docker/cpu.Dockerfile -t colormamba-cpu:0.1.0 .

FROM python:3.12.12-slim-bookworm AS build

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        --index-url "${TORCH_INDEX_URL}"

# ImageNet weights of VGG-19 (the `vgg` loss term: the CPU worker trains too) and AlexNet (the LPIPS
# metric), checked against the hash in their file names; colormamba.pretrained looks in
# $TORCH_HOME/hub/checkpoints/ and never downloads.
ENV TORCH_HOME=/opt/torch
RUN python -c "import torch, torchvision; \
m = torchvision.models; \
[torch.hub.load_state_dict_from_url(w.url, progress=False, check_hash=True) \
 for w in (m.VGG19_Weights.IMAGENET1K_V1, m.AlexNet_Weights.IMAGENET1K_V1)]" \
    && test -s /opt/torch/hub/checkpoints/vgg19-dcbb9e9d.pth \
    && test -s /opt/torch/hub/checkpoints/alexnet-owt-7be5be79.pth

# The project's dependencies, pinned (torch excluded: it is the one above); setuptools builds the
# project in the next stage without network access to a build backend; Flower (compose's `monitor`
# profile runs it from this image) with its own dependencies, as CI tests it.
COPY docker/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt setuptools==80.9.0 \
        flower==2.2.0 humanize==4.17.0 prometheus-client==0.26.0 pytz==2026.6 tornado==6.6.1 \
    && rm /tmp/requirements.txt


FROM python:3.12.12-slim-bookworm AS runtime

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin colormamba \
    && mkdir -p /cache/datasets \
    && chown -R colormamba:colormamba /cache

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/torch /opt/torch
# The compiled-kernel caches of Triton (the `triton` scan) and of torch.compile (`compile: true`) live on
# the cache volume: every run is a fresh process that would compile them again, and a new container too.
ENV PATH=/opt/venv/bin:$PATH \
    TORCH_HOME=/opt/torch \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/inductor

# The project itself (dependencies are in the venv), from the build context without a layer of sources;
# `pip check`: the pinned set is consistent.
RUN --mount=type=bind,target=/src,rw \
    pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && pip check

# The commit the image is built from, for each run's provenance (colormamba.provenance): the image holds no
# .git. Compose passes COLORMAMBA_GIT_COMMIT from the shell, e.g.
#   COLORMAMBA_GIT_COMMIT=$(git describe --always --dirty --abbrev=40) docker compose build
# Empty: runs record the commit as unknown.
ARG GIT_COMMIT=""
ENV COLORMAMBA_GIT_COMMIT=${GIT_COMMIT}

WORKDIR /app
COPY jobs/ /app/jobs/

USER 10001:10001

# Smoke test, as the user that runs the services: the package, the job suite, the baked VGG and AlexNet
# weights (LPIPS loads).
RUN python -c "import torch, colormamba.train, services.app, services.report, flower; \
from colormamba.losses.vgg import find_vgg_weights; print(find_vgg_weights()); \
from colormamba.lpips_score import LPIPSScore; assert LPIPSScore.load().available" \
    && python jobs/submit.py --help >/dev/null

CMD ["python", "jobs/submit.py", "--help"]
