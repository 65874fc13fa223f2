# Worker container for Dataflow TPU workers, and the launcher image of the Flex Template.
# Built by `launch.sh image`, which passes the TPU build args of the chosen accelerator.
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

FROM python:3.11-slim

# Beam's SDK harness entrypoint: makes this image usable as --sdk_container_image.
COPY --from=beam /opt/apache/beam /opt/apache/beam
# The Flex Template launcher: Dataflow runs the same image with this binary as entrypoint to
# build the job graph from FLEX_TEMPLATE_PYTHON_PY_FILE.
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

# A Dataflow TPU worker is a single host: libtpu is told so here instead of asking the
# metadata server (these are the variables Dataflow's TPU troubleshooting page sets).
# The accelerator type and chips per host differ between 1x1, 2x2 and 2x4 workers, so
# launch.sh builds one image per accelerator and names it in the tag.
ARG TPU_ACCELERATOR_TYPE=v5litepod-1
ARG TPU_CHIPS_PER_HOST_BOUNDS=1,1,1
ENV TPU_SKIP_MDS_QUERY=1 \
    TPU_HOST_BOUNDS=1,1,1 \
    TPU_WORKER_HOSTNAMES=localhost \
    TPU_WORKER_ID=0 \
    TPU_ACCELERATOR_TYPE=${TPU_ACCELERATOR_TYPE} \
    TPU_CHIPS_PER_HOST_BOUNDS=${TPU_CHIPS_PER_HOST_BOUNDS} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /koedu

# setup.py extras to install. `--build-arg KOEDU_EXTRAS=gcp` gives a CPU-only image (no libtpu)
# for Flink, Spark or local Docker runs; the TPU_* variables are then simply unused.
ARG KOEDU_EXTRAS=tpu,gcp

# Dependencies first, in their own layer: a code change then rebuilds only the last layers.
# Empty package directories let setup.py's find_packages run before the code is copied.
COPY setup.py ./
RUN mkdir -p model pipeline train \
    && touch model/__init__.py pipeline/__init__.py train/__init__.py \
    && pip install ".[${KOEDU_EXTRAS}]" \
    && pip uninstall --yes koedu \
    && rm -rf model pipeline train build ./*.egg-info

COPY . .
# A regular (not editable) install: workers import koedu from site-packages, the same way
# whatever their working directory.
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && pip check

# CPU images (no tpu extra) ship the fused CPU attention kernel built (model/fused_attention.py),
# so that workers need no compiler; TPU workers never run it.
ENV KOEDU_KERNEL_CACHE=/opt/koedu/kernels
RUN case ",${KOEDU_EXTRAS}," in *,tpu,*) ;; *) \
      apt-get update && apt-get install -y --no-install-recommends g++ \
      && python -m model.fused_attention \
      && apt-get purge -y g++ && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* ;; \
    esac

# Read by the Flex Template launcher (see templates/flex_main.py for why not pipeline/run.py).
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/koedu/templates/flex_main.py

ENTRYPOINT ["/opt/apache/beam/boot"]
