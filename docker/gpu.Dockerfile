# The GPU worker image: torch with CUDA, mamba-ssm's selective-scan kernel (the `mamba` scan backend), the
# VGG-19 ImageNet weights, the colormamba package and the job suite. Built by compose (`docker compose
# build gpu0`) or: docker build -f docker/gpu.Dockerfile -t colormamba-gpu:0.1.0 .
#
# Stage `build` (CUDA devel): a venv with torch from PyTorch's CUDA 12.8 index and mamba-ssm. By default
# mamba-ssm's setup.py downloads its prebuilt wheel for this torch/CUDA/Python/ABI (they exist for torch
# 2.6-2.10 with CUDA 12; the build needs to reach GitHub's release downloads). With MAMBA_CUDA_ARCHS
# set, only the scan kernel is compiled, for those compute capabilities only (setup.py would build nine):
#   docker compose build --build-arg MAMBA_CUDA_ARCHS="8.0;9.0" gpu0      (A100 + H100; 12.0 = RTX 50xx)
# Stage `runtime` (CUDA base: no toolkit; torch's wheels bring the CUDA libraries): the same venv and
# Python, the project, a non-root user, and a smoke test that imports the kernel.
# Host: NVIDIA driver >= 570 (CUDA 12.8) and the NVIDIA Container Toolkit.

FROM nvidia/cuda:12.8.1-devel-ubuntu24.04 AS build

ARG TORCH_VERSION=2.10.0
ARG TORCHVISION_VERSION=0.25.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG MAMBA_SSM_VERSION=2.3.2.post1
# empty: the prebuilt wheel; else compute capabilities separated by ';', e.g. "8.0;9.0"
ARG MAMBA_CUDA_ARCHS=""

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# python3.12-dev and g++: mamba-ssm's setup.py and the kernel build (nvcc comes with the devel image).
# Distribution packages are not pinned (DL3008): the base image's tag fixes the release, and pinned
# versions vanish from the archive with each security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev g++ \
    && rm -rf /var/lib/apt/lists/*

RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        --index-url "${TORCH_INDEX_URL}"

# ImageNet weights of VGG-19 (the `vgg` loss term) and AlexNet (the LPIPS metric), checked against the
# hash in their file names. Nothing is downloaded at run time: colormamba.pretrained looks in
# $TORCH_HOME/hub/checkpoints/.
ENV TORCH_HOME=/opt/torch
RUN python -c "import torch, torchvision; \
m = torchvision.models; \
[torch.hub.load_state_dict_from_url(w.url, progress=False, check_hash=True) \
 for w in (m.VGG19_Weights.IMAGENET1K_V1, m.AlexNet_Weights.IMAGENET1K_V1)]" \
    && test -s /opt/torch/hub/checkpoints/vgg19-dcbb9e9d.pth \
    && test -s /opt/torch/hub/checkpoints/alexnet-owt-7be5be79.pth

# Build tools for mamba-ssm's setup.py (--no-build-isolation: it must see the torch above); einops and
# transformers are what `import mamba_ssm` needs of its declared dependencies (the rest, tilelang,
# quack-kernels, ..., serve other kernels: hence --no-deps).
RUN pip install --no-cache-dir setuptools==80.9.0 wheel==0.45.1 packaging==26.3 ninja==1.13.0 \
        einops==0.8.1 transformers==4.57.1

COPY benchmarks/build_mamba_kernel.py /tmp/build_mamba_kernel.py
# DL3013: the compile branch installs the downloaded sdist of the pinned version, a path hadolint cannot
# tell from an unpinned name.
# hadolint ignore=DL3013
RUN if [ -z "${MAMBA_CUDA_ARCHS}" ]; then \
        pip install --no-cache-dir --no-deps --no-build-isolation "mamba-ssm==${MAMBA_SSM_VERSION}"; \
    else \
        sdist="/tmp/mamba/mamba_ssm-${MAMBA_SSM_VERSION}.tar.gz" \
        && MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-cache-dir --no-deps --no-binary :all: \
            --no-build-isolation --dest /tmp/mamba "mamba-ssm==${MAMBA_SSM_VERSION}" \
        && tar xzf "${sdist}" -C /tmp/mamba \
        && python /tmp/build_mamba_kernel.py "/tmp/mamba/mamba_ssm-${MAMBA_SSM_VERSION}/csrc/selective_scan" \
            --arch "${MAMBA_CUDA_ARCHS}" --build-dir /tmp/mamba/ssc \
        && site=$(python -c "import sysconfig; print(sysconfig.get_paths()['platlib'])") \
        && suffix=$(python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))") \
        && cp /tmp/mamba/ssc/selective_scan_cuda.so "${site}/selective_scan_cuda${suffix}" \
        && MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip install --no-cache-dir --no-deps \
            --no-build-isolation "${sdist}" \
        && rm -rf /tmp/mamba; \
    fi \
    && rm /tmp/build_mamba_kernel.py

# The project's dependencies, pinned (torch excluded: it is the one above)
COPY docker/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt


FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS runtime

# gcc and python3.12-dev: Triton (the `triton` scan backend) compiles its small launcher at first use
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.12 python3.12-dev gcc \
    && rm -rf /var/lib/apt/lists/*

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

# The project itself (its dependencies are in the venv already), from the build context without a layer
# of sources; .dockerignore keeps that context to what the package needs.
RUN --mount=type=bind,target=/src,rw \
    pip install --no-cache-dir --no-deps --no-build-isolation /src

# The commit the image is built from, for each run's provenance (colormamba.provenance): the image holds no
# .git. Compose passes COLORMAMBA_GIT_COMMIT from the shell, e.g.
#   COLORMAMBA_GIT_COMMIT=$(git describe --always --dirty --abbrev=40) docker compose build
# Empty: runs record the commit as unknown.
ARG GIT_COMMIT=""
ENV COLORMAMBA_GIT_COMMIT=${GIT_COMMIT}

USER 10001:10001
WORKDIR /home/colormamba

# Smoke test, as the user that runs the workers: the compiled kernel (torch first: the extension links
# against torch's libraries), mamba-ssm, the package, the job suite, the baked VGG and AlexNet weights.
RUN python -c "import torch, selective_scan_cuda, mamba_ssm" \
    && python -c "import colormamba.ops.scan_mamba, services.app; \
from colormamba.losses.vgg import find_vgg_weights; print(find_vgg_weights()); \
from colormamba.lpips_score import LPIPSScore; assert LPIPSScore.load().available"

CMD ["celery", "-A", "services.app", "worker", "-Q", "gpu", "--loglevel", "INFO"]
