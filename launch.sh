#!/usr/bin/env bash
# Run koedu on Google Cloud: score a corpus on Dataflow with TPU workers, build the worker
# container and the Flex Template, schedule corpus builds, and train on a TPU VM.
#
# Thin by design: every subcommand only assembles gcloud/docker/python command lines from
# flags and KOEDU_* environment variables. Why each option is there: docs/operations.md.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO_DIR
readonly WORKFLOW_SOURCE="templates/score_workflow.yaml"
readonly TEMPLATE_METADATA="templates/koedu_score_metadata.json"
readonly CLOUDBUILD_CONFIG="templates/cloudbuild.yaml"
# uv gives the TPU VM a Python 3.11 next to the runtime image's own Python (3.10 on the
# Ubuntu 22.04 images), because setup.py requires 3.11.
readonly UV_VERSION="0.13.9"

usage() {
  cat <<'EOF'
Usage: launch.sh SUBCOMMAND [options] [-- extra args]

Subcommands
  score      submit `python -m pipeline.run` to Dataflow with TPU workers
  image      build and push the worker container (Dockerfile) for the chosen TPU
  template   build the Dataflow Flex Template that scheduled runs launch
  schedule   deploy the corpus-build workflow and create or update its Cloud Scheduler job
  train      create or reuse a TPU VM and run `python -m train.run` on all its hosts

Every subcommand takes --dry_run: print each command it would run, one per line and
shell-quoted, and run none. Flags win over environment variables.

Cloud (all but train need project, region; score/template/schedule need a bucket)
  --project ID            KOEDU_PROJECT
  --region REGION         KOEDU_REGION      Dataflow region, also Artifact Registry location
  --bucket NAME           KOEDU_BUCKET      gs://NAME/tmp, /staging, /templates
  --repository NAME       KOEDU_REPOSITORY  Artifact Registry repository (default: koedu)
  --image URI             KOEDU_IMAGE       worker image (default:
                          REGION-docker.pkg.dev/PROJECT/REPOSITORY/koedu-worker:ACCEL-GITREV)

Dataflow TPU workers (score, image, template, schedule)
  --tpu_type TYPE         KOEDU_TPU_TYPE      tpu-v5-lite-podslice (default) | tpu-v6e-slice
  --tpu_topology TOPO     KOEDU_TPU_TOPOLOGY  1x1 (default) | 2x2 | 2x4
  --num_workers N         KOEDU_NUM_WORKERS   default 1
  --max_num_workers N     KOEDU_MAX_WORKERS   default 4
  --disk_size_gb N        KOEDU_DISK_SIZE_GB  default 100
  --harness_threads N     KOEDU_HARNESS_THREADS  threads of the one SDK process, default 12
  --worker_zone ZONE      KOEDU_WORKER_ZONE   optional; needed to use a zonal TPU reservation

score
  --input GLOB[,GLOB]  --output DIR  [--model MODEL] [--threshold N]  (passed to pipeline.run)
  --job_name NAME         default koedu-score-UTCDATE-UTCTIME
  -- ARGS                 passed to pipeline.run untouched
  Runs from the repository root with $KOEDU_PYTHON (default: python), which should be 3.11.

image
  --builder cloudbuild|docker   KOEDU_BUILDER (default cloudbuild: no local Docker needed)

template
  --template_path GS_PATH KOEDU_TEMPLATE (default gs://BUCKET/templates/koedu-score-ACCEL.json)

schedule
  --input GLOB --output DIR     may contain {date}: the workflow writes the run's UTC date
                                (YYYY-MM-DD) there when the job starts
  [--model MODEL] [--threshold N] [--template_path GS_PATH]
  --service_account EMAIL  KOEDU_SERVICE_ACCOUNT (required) runs the workflow and signs the
                           scheduler's call
  --cron EXPR              KOEDU_SCHEDULE   default "0 3 * * *"
  --time_zone TZ           KOEDU_TIME_ZONE  time zone of --cron, default Etc/UTC
  --date_offset_days N     date = today (UTC) minus N days, default 0
  --crawl_complete_marker GS_URL  KOEDU_CRAWL_COMPLETE_MARKER  optional gs://BUCKET/OBJECT,
                           may contain {date}: wait for it before launching (e.g.
                           gs://crawl/{date}/_SUCCESS)
  --crawl_wait_hours H     KOEDU_CRAWL_WAIT_HOURS  how long to wait for the marker, default 6;
                           then the run fails with "skipped: crawl incomplete"
  --max_attempts N         KOEDU_MAX_ATTEMPTS  Dataflow jobs per run, default 3: a failed job is
                           relaunched as NAME-a2, NAME-a3 (it resumes the finished chunks)
  --scheduler_job NAME     default koedu-score-daily
  --workflow NAME          default koedu-score
  Each run waits for its job; a finished day (OUTPUT/stats.json) is not launched again. A run
  that leaves its day incomplete ends FAILED (gcloud workflows executions list/describe).

train
  --zone ZONE              KOEDU_ZONE (required)
  --tpu_name NAME          KOEDU_TPU_NAME          default koedu-train
  --accelerator_type TYPE  KOEDU_TRAIN_ACCELERATOR default v5litepod-8 (v5litepod-N, v6e-N,
                           v5p-N, v4-N); N > 8 is a multi-host slice: train.run gets --distributed
  --runtime_version V      KOEDU_TPU_RUNTIME       default from the accelerator type
  --spot                   create a Spot TPU VM
  --data GLOB --output GS_DIR  passed to train.run; -- ARGS passed to train.run untouched

Exit status 2: a usage error, found before any command is printed or run.
EOF
}

die() {
  printf 'launch.sh: %s\n' "$*" >&2
  exit 2
}

note() {
  printf 'launch.sh: %s\n' "$*" >&2
}

# One command per line, each word shell-quoted, so a dry run can be pasted back into a shell.
print_cmd() {
  local line="" word
  for word in "$@"; do
    line+="$(printf '%q' "$word") "
  done
  printf '%s\n' "${line% }"
}

run() {
  print_cmd "$@"
  if [[ "$DRY_RUN" == 1 ]]; then
    return 0
  fi
  "$@"
}

# Runs a read-only probe (describe). A dry run prints it and answers "absent", so the printed
# plan shows the create path; the note says what a real run does instead.
probe() {
  print_cmd "$@"
  if [[ "$DRY_RUN" == 1 ]]; then
    return 1
  fi
  "$@" >/dev/null 2>&1
}

# A JSON string literal. Callers reject control characters first (no_control_chars): a die
# here would only leave the command substitution it runs in.
json_str() {
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '"%s"' "$s"
}

no_control_chars() {  # no_control_chars FLAG VALUE [FLAG VALUE ...]
  while (($#)); do
    [[ "$2" != *[[:cntrl:]]* ]] || die "$1 must not contain control characters: $(printf '%q' "$2")"
    shift 2
  done
}

require() {  # require VALUE FLAG [ENVVAR]
  [[ -n "$1" ]] || die "missing $2${3:+ (or set $3)}"
}

require_int() {  # require_int VALUE FLAG
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || die "$2 must be a positive integer, got '$1'"
}

# The Dataflow TPU configurations koedu knows: (type, topology) -> the machine type Dataflow
# requires. The v5e rows and v6e 1x1 are from the table on Dataflow's "Support for TPUs" page;
# v6e 2x2/2x4 from the Cloud TPU v6e page (docs/operations.md says what is unverified). The
# TPU_* values are what the worker container tells libtpu about its single host (Dockerfile).
resolve_tpu() {
  case "$TPU_TYPE/$TPU_TOPOLOGY" in
    tpu-v5-lite-podslice/1x1) MACHINE_TYPE=ct5lp-hightpu-1t; ACCEL=v5litepod-1; CHIPS_BOUNDS=1,1,1 ;;
    tpu-v5-lite-podslice/2x2) MACHINE_TYPE=ct5lp-hightpu-4t; ACCEL=v5litepod-4; CHIPS_BOUNDS=2,2,1 ;;
    tpu-v5-lite-podslice/2x4) MACHINE_TYPE=ct5lp-hightpu-8t; ACCEL=v5litepod-8; CHIPS_BOUNDS=2,4,1 ;;
    tpu-v6e-slice/1x1) MACHINE_TYPE=ct6e-standard-1t; ACCEL=v6e-1; CHIPS_BOUNDS=1,1,1 ;;
    tpu-v6e-slice/2x2) MACHINE_TYPE=ct6e-standard-4t; ACCEL=v6e-4; CHIPS_BOUNDS=2,2,1 ;;
    tpu-v6e-slice/2x4) MACHINE_TYPE=ct6e-standard-8t; ACCEL=v6e-8; CHIPS_BOUNDS=2,4,1 ;;
    *)
      die "unknown TPU type '$TPU_TYPE' with topology '$TPU_TOPOLOGY' (--tpu_type / KOEDU_TPU_TYPE," \
        "--tpu_topology / KOEDU_TPU_TOPOLOGY); known: tpu-v5-lite-podslice and tpu-v6e-slice," \
        "each with 1x1, 2x2 or 2x4"
      ;;
  esac
  WORKER_ACCELERATOR="type:$TPU_TYPE;topology:$TPU_TOPOLOGY"
}

# The image tag names the accelerator (its TPU_* settings are baked in) and the source
# revision, so `score` submits exactly the code that `image` built from this checkout.
default_image() {
  local rev=""
  if command -v git >/dev/null 2>&1; then
    rev="$(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || true)"
  fi
  printf '%s-docker.pkg.dev/%s/%s/koedu-worker:%s-%s' \
    "$REGION" "$PROJECT" "$REPOSITORY" "$ACCEL" "${rev:-dev}"
}

# --- option parsing ---------------------------------------------------------------------

SUBCOMMAND="${1:-}"
case "$SUBCOMMAND" in
  -h | --help | help) usage; exit 0 ;;
  score | image | template | schedule | train) shift ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown subcommand '$SUBCOMMAND' (try --help)" ;;
esac

DRY_RUN=0
PROJECT="${KOEDU_PROJECT:-}"
REGION="${KOEDU_REGION:-}"
BUCKET="${KOEDU_BUCKET:-}"
REPOSITORY="${KOEDU_REPOSITORY:-koedu}"
IMAGE="${KOEDU_IMAGE:-}"
TPU_TYPE="${KOEDU_TPU_TYPE:-tpu-v5-lite-podslice}"
TPU_TOPOLOGY="${KOEDU_TPU_TOPOLOGY:-1x1}"
NUM_WORKERS="${KOEDU_NUM_WORKERS:-1}"
MAX_WORKERS="${KOEDU_MAX_WORKERS:-4}"
DISK_SIZE_GB="${KOEDU_DISK_SIZE_GB:-100}"
HARNESS_THREADS="${KOEDU_HARNESS_THREADS:-12}"
WORKER_ZONE="${KOEDU_WORKER_ZONE:-}"
BUILDER="${KOEDU_BUILDER:-cloudbuild}"
TEMPLATE_PATH="${KOEDU_TEMPLATE:-}"
SERVICE_ACCOUNT="${KOEDU_SERVICE_ACCOUNT:-}"
CRON="${KOEDU_SCHEDULE:-0 3 * * *}"
TIME_ZONE="${KOEDU_TIME_ZONE:-Etc/UTC}"
DATE_OFFSET_DAYS=0
CRAWL_MARKER="${KOEDU_CRAWL_COMPLETE_MARKER:-}"
CRAWL_WAIT_HOURS="${KOEDU_CRAWL_WAIT_HOURS:-6}"
MAX_ATTEMPTS="${KOEDU_MAX_ATTEMPTS:-3}"
SCHEDULER_JOB="koedu-score-daily"
WORKFLOW="koedu-score"
ZONE="${KOEDU_ZONE:-}"
TPU_NAME="${KOEDU_TPU_NAME:-koedu-train}"
TRAIN_ACCELERATOR="${KOEDU_TRAIN_ACCELERATOR:-v5litepod-8}"
RUNTIME_VERSION="${KOEDU_TPU_RUNTIME:-}"
SPOT=0
INPUT=""
OUTPUT=""
MODEL=""
THRESHOLD=""
DATA=""
JOB_NAME=""
EXTRA_ARGS=()

readonly CLOUD_FLAGS="--project --region --bucket --repository --image"
readonly TPU_FLAGS="--tpu_type --tpu_topology --num_workers --max_num_workers --disk_size_gb
  --harness_threads --worker_zone"
case "$SUBCOMMAND" in
  score) ALLOWED="$CLOUD_FLAGS $TPU_FLAGS --input --output --model --threshold --job_name" ;;
  image) ALLOWED="$CLOUD_FLAGS --tpu_type --tpu_topology --builder" ;;
  template) ALLOWED="$CLOUD_FLAGS $TPU_FLAGS --template_path" ;;
  schedule)
    ALLOWED="$CLOUD_FLAGS $TPU_FLAGS --template_path --input --output --model --threshold
      --service_account --cron --time_zone --date_offset_days --crawl_complete_marker
      --crawl_wait_hours --max_attempts --scheduler_job --workflow"
    ;;
  train)
    ALLOWED="--project --zone --tpu_name --accelerator_type --runtime_version --spot --data
      --output"
    ;;
esac
ALLOWED=" ${ALLOWED//$'\n'/ } "  # a space on each side of every flag, for the lookup below

while (($#)); do
  arg="$1"
  shift
  case "$arg" in
    --) EXTRA_ARGS=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    --dry_run) DRY_RUN=1; continue ;;
    --spot) flag="--spot" ;;
    --*=*) flag="${arg%%=*}"; value="${arg#*=}" ;;
    --*)
      flag="$arg"
      (($#)) || die "$flag needs a value"
      value="$1"
      shift
      ;;
    *) die "unexpected argument '$arg' (extra arguments for the job go after --)" ;;
  esac
  [[ "$ALLOWED" == *" $flag "* ]] || die "$SUBCOMMAND does not take $flag (try --help)"
  case "$flag" in
    --project) PROJECT="$value" ;;
    --region) REGION="$value" ;;
    --bucket) BUCKET="$value" ;;
    --repository) REPOSITORY="$value" ;;
    --image) IMAGE="$value" ;;
    --tpu_type) TPU_TYPE="$value" ;;
    --tpu_topology) TPU_TOPOLOGY="$value" ;;
    --num_workers) NUM_WORKERS="$value" ;;
    --max_num_workers) MAX_WORKERS="$value" ;;
    --disk_size_gb) DISK_SIZE_GB="$value" ;;
    --harness_threads) HARNESS_THREADS="$value" ;;
    --worker_zone) WORKER_ZONE="$value" ;;
    --builder) BUILDER="$value" ;;
    --template_path) TEMPLATE_PATH="$value" ;;
    --service_account) SERVICE_ACCOUNT="$value" ;;
    --cron) CRON="$value" ;;
    --time_zone) TIME_ZONE="$value" ;;
    --date_offset_days) DATE_OFFSET_DAYS="$value" ;;
    --crawl_complete_marker) CRAWL_MARKER="$value" ;;
    --crawl_wait_hours) CRAWL_WAIT_HOURS="$value" ;;
    --max_attempts) MAX_ATTEMPTS="$value" ;;
    --scheduler_job) SCHEDULER_JOB="$value" ;;
    --workflow) WORKFLOW="$value" ;;
    --zone) ZONE="$value" ;;
    --tpu_name) TPU_NAME="$value" ;;
    --accelerator_type) TRAIN_ACCELERATOR="$value" ;;
    --runtime_version) RUNTIME_VERSION="$value" ;;
    --spot) SPOT=1 ;;
    --input) INPUT="$value" ;;
    --output) OUTPUT="$value" ;;
    --model) MODEL="$value" ;;
    --threshold) THRESHOLD="$value" ;;
    --data) DATA="$value" ;;
    --job_name) JOB_NAME="$value" ;;
  esac
done

# --- validation: everything is checked before the first command is printed ---------------

require "$PROJECT" --project KOEDU_PROJECT
if [[ "$SUBCOMMAND" != train ]]; then
  require "$REGION" --region KOEDU_REGION
  resolve_tpu
  [[ -n "$IMAGE" ]] || IMAGE="$(default_image)"
fi
case "$SUBCOMMAND" in
  score | template | schedule)
    require "$BUCKET" --bucket KOEDU_BUCKET
    BUCKET="${BUCKET#gs://}"
    BUCKET="${BUCKET%/}"
    [[ "$BUCKET" != */* ]] || die "--bucket takes a bucket name, not a path: '$BUCKET'"
    require_int "$NUM_WORKERS" --num_workers
    require_int "$MAX_WORKERS" --max_num_workers
    require_int "$DISK_SIZE_GB" --disk_size_gb
    require_int "$HARNESS_THREADS" --harness_threads
    ((NUM_WORKERS <= MAX_WORKERS)) || die "--num_workers ($NUM_WORKERS) exceeds --max_num_workers ($MAX_WORKERS)"
    [[ -n "$TEMPLATE_PATH" ]] || TEMPLATE_PATH="gs://$BUCKET/templates/koedu-score-$ACCEL.json"
    ;;
esac

if ((${#EXTRA_ARGS[@]})) && [[ "$SUBCOMMAND" != score && "$SUBCOMMAND" != train ]]; then
  die "$SUBCOMMAND takes no arguments after -- (only score and train pass them on)"
fi
if [[ "$SUBCOMMAND" == image && "$BUILDER" != cloudbuild && "$BUILDER" != docker ]]; then
  die "unknown --builder '$BUILDER' (or KOEDU_BUILDER): cloudbuild or docker"
fi

# --- subcommands --------------------------------------------------------------------------

cmd_score() {
  require "$INPUT" --input
  require "$OUTPUT" --output
  [[ -n "$JOB_NAME" ]] || JOB_NAME="koedu-score-$(date -u +%Y%m%d-%H%M%S)"
  local cmd=(
    "${KOEDU_PYTHON:-python}" -m pipeline.run
    --runner=DataflowRunner
    "--project=$PROJECT"
    "--region=$REGION"
    "--job_name=$JOB_NAME"
    "--temp_location=gs://$BUCKET/tmp"
    "--staging_location=gs://$BUCKET/staging"
    "--sdk_container_image=$IMAGE"
    "--dataflow_service_options=worker_accelerator=$WORKER_ACCELERATOR"
    "--worker_machine_type=$MACHINE_TYPE"
    # A TPU chip can be opened by one process only; Dataflow otherwise starts one SDK
    # process per vCPU, and all but the first would fail with "Device or resource busy".
    --experiments=no_use_multiple_sdk_containers
    "--number_of_worker_harness_threads=$HARNESS_THREADS"
    "--num_workers=$NUM_WORKERS"
    "--max_num_workers=$MAX_WORKERS"
    "--disk_size_gb=$DISK_SIZE_GB"
  )
  [[ -z "$WORKER_ZONE" ]] || cmd+=("--worker_zone=$WORKER_ZONE")
  cmd+=("--input=$INPUT" "--output=$OUTPUT")
  [[ -z "$MODEL" ]] || cmd+=("--model=$MODEL")
  [[ -z "$THRESHOLD" ]] || cmd+=("--threshold=$THRESHOLD")
  # Under `set -u`, "${a[@]}" of an empty array is an error in bash < 4.4 (macOS's 3.2).
  cmd+=(${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
  cd "$REPO_DIR"  # so `pipeline` imports from this checkout, the code the image was built from
  run "${cmd[@]}"
}

cmd_image() {
  case "$BUILDER" in
    cloudbuild)
      # --substitutions is a gcloud dict flag: ^;^ switches its separator to ';' because the
      # chip bounds contain commas (see `gcloud topic escaping`).
      run gcloud builds submit "$REPO_DIR" \
        "--project=$PROJECT" \
        "--config=$REPO_DIR/$CLOUDBUILD_CONFIG" \
        "--ignore-file=.dockerignore" \
        "--substitutions=^;^_IMAGE=$IMAGE;_TPU_ACCELERATOR_TYPE=$ACCEL;_TPU_CHIPS_PER_HOST_BOUNDS=$CHIPS_BOUNDS"
      ;;
    docker)
      # TPU hosts are x86-64; the platform flag keeps an arm64 laptop from building for itself.
      run docker build --platform=linux/amd64 \
        --build-arg "TPU_ACCELERATOR_TYPE=$ACCEL" \
        --build-arg "TPU_CHIPS_PER_HOST_BOUNDS=$CHIPS_BOUNDS" \
        --tag "$IMAGE" "$REPO_DIR"
      run docker push "$IMAGE"
      ;;
  esac
}

cmd_template() {
  # The template records the TPU defaults, so `gcloud dataflow flex-template run` by hand
  # gets TPU workers too; the scheduled launch passes them again explicitly.
  run gcloud dataflow flex-template build "$TEMPLATE_PATH" \
    "--project=$PROJECT" \
    "--image=$IMAGE" \
    --sdk-language=PYTHON \
    "--metadata-file=$REPO_DIR/$TEMPLATE_METADATA" \
    "--worker-machine-type=$MACHINE_TYPE" \
    "--additional-experiments=worker_accelerator=$WORKER_ACCELERATOR,no_use_multiple_sdk_containers" \
    "--num-workers=$NUM_WORKERS" \
    "--max-workers=$MAX_WORKERS" \
    "--temp-location=gs://$BUCKET/tmp" \
    "--staging-location=gs://$BUCKET/staging"
}

# The argument of each scheduled workflow execution: the launch request with {date} still in
# the parameter values, and how to wait and retry; the workflow fills in the date when it runs
# (templates/score_workflow.yaml).
schedule_argument() {
  local params environment waiting
  params="$(json_str input):$(json_str "$INPUT"),$(json_str output):$(json_str "$OUTPUT")"
  [[ -z "$MODEL" ]] || params+=",$(json_str model):$(json_str "$MODEL")"
  [[ -z "$THRESHOLD" ]] || params+=",$(json_str threshold):$(json_str "$THRESHOLD")"
  environment="$(json_str tempLocation):$(json_str "gs://$BUCKET/tmp")"
  environment+=",$(json_str stagingLocation):$(json_str "gs://$BUCKET/staging")"
  environment+=",$(json_str sdkContainerImage):$(json_str "$IMAGE")"
  environment+=",$(json_str machineType):$(json_str "$MACHINE_TYPE")"
  environment+=",$(json_str numWorkers):$NUM_WORKERS"
  environment+=",$(json_str maxWorkers):$MAX_WORKERS"
  environment+=",$(json_str diskSizeGb):$DISK_SIZE_GB"
  environment+=",$(json_str additionalExperiments):[$(json_str "worker_accelerator=$WORKER_ACCELERATOR"),$(json_str no_use_multiple_sdk_containers)]"
  environment+=",$(json_str additionalPipelineOptions):[$(json_str "number_of_worker_harness_threads=$HARNESS_THREADS")]"
  [[ -z "$WORKER_ZONE" ]] || environment+=",$(json_str workerZone):$(json_str "$WORKER_ZONE")"
  waiting="$(json_str max_attempts):$MAX_ATTEMPTS,$(json_str crawl_wait_hours):$CRAWL_WAIT_HOURS"
  [[ -z "$CRAWL_MARKER" ]] || waiting+=",$(json_str crawl_complete_marker):$(json_str "$CRAWL_MARKER")"
  printf '{%s:%s,%s:%s,%s:%s,%s:%s,%s:%s,%s,%s:{%s},%s:{%s}}' \
    "$(json_str project)" "$(json_str "$PROJECT")" \
    "$(json_str region)" "$(json_str "$REGION")" \
    "$(json_str template)" "$(json_str "$TEMPLATE_PATH")" \
    "$(json_str job_prefix)" "$(json_str "$WORKFLOW")" \
    "$(json_str date_offset_days)" "$DATE_OFFSET_DAYS" \
    "$waiting" \
    "$(json_str parameters)" "$params" \
    "$(json_str environment)" "$environment"
}

cmd_schedule() {
  require "$INPUT" --input
  require "$OUTPUT" --output
  require "$SERVICE_ACCOUNT" --service_account KOEDU_SERVICE_ACCOUNT
  # These go into the scheduler's JSON body as numbers: no leading zeros, no signs.
  [[ "$DATE_OFFSET_DAYS" =~ ^(0|[1-9][0-9]*)$ ]] || die "--date_offset_days must be a whole number, got '$DATE_OFFSET_DAYS'"
  require_int "$MAX_ATTEMPTS" --max_attempts
  [[ "$CRAWL_WAIT_HOURS" =~ ^(0|[1-9][0-9]*)(\.[0-9]+)?$ ]] ||
    die "--crawl_wait_hours (or KOEDU_CRAWL_WAIT_HOURS) must be a number of hours such as 6 or 1.5, got '$CRAWL_WAIT_HOURS'"
  if [[ -n "$CRAWL_MARKER" && ! "$CRAWL_MARKER" =~ ^gs://[^/]+/.+ ]]; then
    die "--crawl_complete_marker (or KOEDU_CRAWL_COMPLETE_MARKER) must be a gs://BUCKET/OBJECT URL, got '$CRAWL_MARKER'"
  fi
  [[ "$WORKFLOW" =~ ^[a-z][-a-z0-9]*$ ]] || die "--workflow must be lowercase letters, digits and '-' (it prefixes Dataflow job names)"
  no_control_chars --project "$PROJECT" --region "$REGION" --bucket "$BUCKET" --image "$IMAGE" \
    --template_path "$TEMPLATE_PATH" --input "$INPUT" --output "$OUTPUT" --model "$MODEL" \
    --threshold "$THRESHOLD" --worker_zone "$WORKER_ZONE" --crawl_complete_marker "$CRAWL_MARKER"
  if [[ "$INPUT$OUTPUT" != *"{date}"* ]]; then
    note "neither --input nor --output contains {date}: every run would score the same paths"
  fi
  if [[ -n "$CRAWL_MARKER" && "$CRAWL_MARKER" != *"{date}"* ]]; then
    note "--crawl_complete_marker contains no {date}: every run would wait for the same object"
  fi
  local body uri
  body="{$(json_str argument):$(json_str "$(schedule_argument)")}"
  uri="https://workflowexecutions.googleapis.com/v1/projects/$PROJECT/locations/$REGION/workflows/$WORKFLOW/executions"
  run gcloud workflows deploy "$WORKFLOW" \
    "--project=$PROJECT" \
    "--location=$REGION" \
    "--source=$REPO_DIR/$WORKFLOW_SOURCE" \
    "--service-account=$SERVICE_ACCOUNT"
  local verb=create
  if probe gcloud scheduler jobs describe "$SCHEDULER_JOB" "--project=$PROJECT" "--location=$REGION"; then
    verb=update
  elif [[ "$DRY_RUN" == 1 ]]; then
    note "dry run: if scheduler job $SCHEDULER_JOB exists, 'update http' runs instead of 'create http'"
  fi
  run gcloud scheduler jobs "$verb" http "$SCHEDULER_JOB" \
    "--project=$PROJECT" \
    "--location=$REGION" \
    "--schedule=$CRON" \
    "--time-zone=$TIME_ZONE" \
    "--uri=$uri" \
    --http-method=POST \
    "--message-body=$body" \
    "--oauth-service-account-email=$SERVICE_ACCOUNT"
}

cmd_train() {
  require "$ZONE" --zone KOEDU_ZONE
  require "$DATA" --data
  require "$OUTPUT" --output
  if [[ -z "$RUNTIME_VERSION" ]]; then
    case "$TRAIN_ACCELERATOR" in
      v6e-[0-9]*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
      v5litepod-[0-9]*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
      v5p-[0-9]*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
      v4-[0-9]*) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    esac
  fi
  [[ "$TRAIN_ACCELERATOR" =~ ^(v6e|v5litepod|v5p|v4)-[0-9]+$ ]] ||
    die "unknown TPU accelerator type '$TRAIN_ACCELERATOR' (--accelerator_type / KOEDU_TRAIN_ACCELERATOR): v5litepod-N, v6e-N, v5p-N or v4-N"

  local where=("--project=$PROJECT" "--zone=$ZONE")
  local tarball="${TMPDIR:-/tmp}/koedu-src-$TPU_NAME.tar.gz"
  local train_cmd word
  train_cmd="cd ~/koedu && ~/koedu-venv/bin/python -m train.run"
  # Every family named here has at most 8 chips (v5e, v6e) or 8 TensorCores (v4, v5p) per host:
  # a larger slice is several hosts, one JAX process each, which must join one another.
  # train.run also joins them where the TPU runtime reports several hosts; the flag makes it
  # explicit on every host of the slice.
  local multi_host=()
  if ((10#${TRAIN_ACCELERATOR##*-} > 8)); then multi_host=(--distributed); fi
  for word in "--data=$DATA" "--output=$OUTPUT" ${multi_host[@]+"${multi_host[@]}"} ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}; do
    train_cmd+=" $(printf '%q' "$word")"
  done

  if probe gcloud compute tpus tpu-vm describe "$TPU_NAME" "${where[@]}"; then
    note "reusing TPU VM $TPU_NAME"
  else
    [[ "$DRY_RUN" == 0 ]] || note "dry run: if TPU VM $TPU_NAME exists, it is reused instead of created"
    local create=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${where[@]}"
      "--accelerator-type=$TRAIN_ACCELERATOR" "--version=$RUNTIME_VERSION")
    [[ "$SPOT" == 0 ]] || create+=(--spot)
    run "${create[@]}"
  fi
  # Only what `pip install .` needs: the source, without caches, tests or local venvs.
  run tar -czf "$tarball" --exclude=__pycache__ -C "$REPO_DIR" setup.py model pipeline train
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:koedu-src.tar.gz" "${where[@]}" --worker=all
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all \
    "--command=set -e; rm -rf ~/koedu; mkdir -p ~/koedu; tar -xzf ~/koedu-src.tar.gz -C ~/koedu; python3 -m pip install --user --quiet uv==$UV_VERSION; python3 -m uv venv --allow-existing --python 3.11 ~/koedu-venv; cd ~/koedu; python3 -m uv pip install --python ~/koedu-venv/bin/python '.[tpu]'"
  # Every host runs the same command at once; on a multi-host slice the processes join.
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all "--command=$train_cmd"
}

"cmd_$SUBCOMMAND"
