# Worker container for Dataflow TPU and GPU workers, and the launcher image of the Flex Template.
# Built by `launch.sh image`: the `tpu` target (the default, last) with the TPU build args of the
# chosen accelerator, or the `cuda` target with KOEDU_EXTRAS=cuda,gcp for GPU workers.
#
# A slim Python base plus Beam's boot binary (rather than FROM the Beam SDK image): the SDK
# image ships its own pins of numpy, pyarrow and friends, and installing setup.py's exact
# pins over them would leave a mix; here pip installs one consistent set, checked by pip check.
ARG BEAM_IMAGE=apache/beam_python3.11_sdk:2.77.0
# The tag Google's own sample (python-docs-samples, flex-templates/pipeline_with_dependencies)
# pins; any later python311-template-launcher-base tag works the same way.
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:20230622_RC00

FROM ${BEAM_IMAGE} AS beam
FROM ${LAUNCHER_IMAGE} AS launcher

FROM python:3.11-slim AS common

# Beam's SDK harness entrypoint: makes this image usable as --sdk_container_image.
COPY --from=beam /opt/apache/beam /opt/apache/beam
# The Flex Template launcher: Dataflow runs the same image with this binary as entrypoint to
# build the job graph from FLEX_TEMPLATE_PYTHON_PY_FILE.
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /koedu

# setup.py extras to install: tpu,gcp (TPU workers), cuda,gcp (GPU workers: jax[cuda12] at the
# pinned jax, with CUDA's libraries as pip wheels), or gcp alone for a CPU-only image (Flink,
# Spark or local Docker runs).
ARG KOEDU_EXTRAS=tpu,gcp

# Dependencies first, in their own layer: a code change then rebuilds only the last layers.
# Empty package directories let setup.py's find_packages run before the code is copied.
COPY setup.py ./
RUN mkdir -p options model pipeline train launcher \
    && touch options/__init__.py model/__init__.py pipeline/__init__.py train/__init__.py launcher/__init__.py \
    && pip install ".[${KOEDU_EXTRAS}]" \
    && pip uninstall --yes koedu \
    && rm -rf options model pipeline train launcher build ./*.egg-info

COPY . .
# A regular (not editable) install: workers import koedu from site-packages, the same way
# whatever their working directory.
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && pip check

# Read by the Flex Template launcher (see templates/flex_main.py for why not pipeline/run.py).
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/koedu/templates/flex_main.py

ENTRYPOINT ["/opt/apache/beam/boot"]


# GPU workers. Dataflow installs the NVIDIA driver on the VM (install-nvidia-driver in the
# worker_accelerator option) and mounts it into the container under /usr/local/nvidia; the
# CUDA runtime, cuDNN and cuBLAS come with jax[cuda12]'s wheels.
FROM common AS cuda
ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64 \
    PATH=/usr/local/nvidia/bin:${PATH}


# TPU workers (and, with KOEDU_EXTRAS=gcp, CPU-only images). A Dataflow TPU worker is a single
# host: libtpu is told so here instead of asking the metadata server (the variables Dataflow's
# TPU troubleshooting page sets). The accelerator type and chips per host differ between 1x1,
# 2x2 and 2x4 workers, so launch.sh builds one image per accelerator and names it in the tag.
FROM common AS tpu
ARG KOEDU_EXTRAS=tpu,gcp
ARG TPU_ACCELERATOR_TYPE=v5litepod-1
ARG TPU_CHIPS_PER_HOST_BOUNDS=1,1,1
ENV TPU_SKIP_MDS_QUERY=1 \
    TPU_HOST_BOUNDS=1,1,1 \
    TPU_WORKER_HOSTNAMES=localhost \
    TPU_WORKER_ID=0 \
    TPU_ACCELERATOR_TYPE=${TPU_ACCELERATOR_TYPE} \
    TPU_CHIPS_PER_HOST_BOUNDS=${TPU_CHIPS_PER_HOST_BOUNDS}

# CPU images (no tpu extra) ship the CPU kernels built in every variant (model/cpu_kernels.py: the
# worker loads the one its CPU runs), so that workers need no compiler; TPU workers never run them.
ENV KOEDU_KERNEL_CACHE=/opt/koedu/kernels
RUN case ",${KOEDU_EXTRAS}," in *,tpu,*) ;; *) \
      apt-get update && apt-get install -y --no-install-recommends g++ \
      && python -m model.cpu_kernels amx avx512bf16 avx512 \
      && apt-get purge -y g++ && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* ;; \
    esac
