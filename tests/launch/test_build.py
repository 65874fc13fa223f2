"""launch.sh: `image`, `template`, `schedule` and `train`, and real runs making the printed calls."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch.launcher import (CLOUD, IMAGE, REPO, SA, SCHEDULE, SCORE, TRAIN, calls, dry, launch,
                                   options, words)


def test_image_cloud_build_passes_the_tpu_build_args(env):
    (cmd,) = dry(env, "image", "--image", IMAGE, "--tpu_topology", "2x2")
    assert cmd[:3] == ["gcloud", "builds", "submit"]
    assert cmd[3] == str(REPO)
    opts = options(cmd)
    assert Path(opts["--config"]) == REPO / "templates" / "cloudbuild.yaml"
    assert opts["--ignore-file"] == ".dockerignore"
    # gcloud's alternate-delimiter syntax: ^;^ then ';'-separated KEY=VALUE (values have commas).
    value = opts["--substitutions"]
    assert value.startswith("^;^")
    subs = dict(item.split("=", 1) for item in value[3:].split(";"))
    assert subs == {"_IMAGE": IMAGE, "_TPU_ACCELERATOR_TYPE": "v5litepod-4",
                    "_TPU_CHIPS_PER_HOST_BOUNDS": "2,2,1"}
    config = (REPO / "templates" / "cloudbuild.yaml").read_text()
    for key in subs:
        assert "${%s}" % key in config


def test_image_docker_builds_and_pushes(env):
    build, push = dry(env, "image", "--image", IMAGE, "--builder", "docker")
    assert build[:2] == ["docker", "build"]
    assert "TPU_ACCELERATOR_TYPE=v5litepod-1" in build and "TPU_CHIPS_PER_HOST_BOUNDS=1,1,1" in build
    assert build[-3:] == ["--tag", IMAGE, str(REPO)]
    assert push == ["docker", "push", IMAGE]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG TPU_ACCELERATOR_TYPE" in dockerfile and "ARG TPU_CHIPS_PER_HOST_BOUNDS" in dockerfile
    assert "apache/beam_python3.11_sdk:2.77.0" in dockerfile
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile


def test_template_builds_a_flex_template_with_tpu_defaults(env):
    (cmd,) = dry(env, "template", "--image", IMAGE)
    assert cmd[:4] == ["gcloud", "dataflow", "flex-template", "build"]
    assert cmd[4] == "gs://bkt/templates/koedu-score-v5litepod-1.json"
    opts = options(cmd)
    assert opts["--image"] == IMAGE
    assert opts["--sdk-language"] == "PYTHON"
    assert Path(opts["--metadata-file"]).is_file()
    assert opts["--worker-machine-type"] == "ct5lp-hightpu-1t"
    assert opts["--additional-experiments"].split(",") == [
        "worker_accelerator=type:tpu-v5-lite-podslice;topology:1x1", "no_use_multiple_sdk_containers"]


def test_template_metadata_declares_the_pipeline_parameters():
    metadata = json.loads((REPO / "templates" / "koedu_score_metadata.json").read_text())
    assert metadata["name"]
    params = {p["name"]: p for p in metadata["parameters"]}
    for p in params.values():  # gcloud refuses a parameter without these
        assert p["label"] and p["helpText"]
    assert not params["input"]["isOptional"] and not params["output"]["isOptional"]
    assert {"model", "threshold"} <= set(params)


def test_template_parameters_are_pipeline_options():
    import argparse

    from pipeline.options import ScoringOptions

    parser = argparse.ArgumentParser()
    ScoringOptions._add_argparse_args(parser)
    pipeline_options = {action.dest: action for action in parser._actions}
    metadata = json.loads((REPO / "templates" / "koedu_score_metadata.json").read_text())
    for p in metadata["parameters"]:
        assert p["name"] in pipeline_options, f"{p['name']} is not an option of pipeline.run"
        # A Flex Template passes --name=value: a store_true flag could not be set that way.
        assert pipeline_options[p["name"]].nargs != 0, f"{p['name']} takes no value"
        # A value the template refuses, or one it lets through to fail in pipeline.run, is a bug.
        choices = pipeline_options[p["name"]].choices
        if choices:
            import re
            accepted = re.fullmatch(r"\^\((.*)\)\$", p["regexes"][0]).group(1).split("|")
            assert sorted(accepted) == sorted(choices), p["name"]


def test_flex_template_entry_point_runs_the_pipeline_cli(env):
    # In the image koedu is installed; here PYTHONPATH stands in for that.
    result = subprocess.run([sys.executable, str(REPO / "templates" / "flex_main.py"), "--help"],
                            env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--input" in result.stdout and "--threshold" in result.stdout


def scheduled_launch(env, *args):
    deploy, describe, create = dry(env, *args)
    body = json.loads(options(create)["--message-body"])
    return deploy, describe, create, json.loads(body["argument"])


def test_schedule_deploys_the_workflow_and_schedules_it(env):
    deploy, describe, create, argument = scheduled_launch(
        env, *SCHEDULE, "--model", "gs://models/run1", "--cron", "30 2 * * 1", "--date_offset_days", "1")
    assert deploy[:4] == ["gcloud", "workflows", "deploy", "koedu-score"]
    assert Path(options(deploy)["--source"]) == REPO / "templates" / "score_workflow.yaml"
    assert options(deploy)["--service-account"] == SA
    assert describe[:5] == ["gcloud", "scheduler", "jobs", "describe", "koedu-score-daily"]
    assert create[:6] == ["gcloud", "scheduler", "jobs", "create", "http", "koedu-score-daily"]
    opts = options(create)
    assert opts["--uri"] == ("https://workflowexecutions.googleapis.com/v1/projects/proj-1/"
                             "locations/us-central1/workflows/koedu-score/executions")
    assert opts["--schedule"] == "30 2 * * 1"
    assert opts["--oauth-service-account-email"] == SA
    assert argument["parameters"] == {
        "input": "gs://crawl/{date}/*.jsonl.zst", "output": "gs://corpus/{date}", "model": "gs://models/run1"}
    assert argument["template"] == "gs://bkt/templates/koedu-score-v5litepod-1.json"
    assert argument["date_offset_days"] == 1
    environment = argument["environment"]
    assert environment["sdkContainerImage"] == IMAGE
    assert environment["machineType"] == "ct5lp-hightpu-1t"
    assert environment["additionalExperiments"] == [
        "worker_accelerator=type:tpu-v5-lite-podslice;topology:1x1", "no_use_multiple_sdk_containers"]
    assert environment["additionalPipelineOptions"] == ["number_of_worker_harness_threads=12"]
    assert (environment["tempLocation"], environment["stagingLocation"]) == ("gs://bkt/tmp", "gs://bkt/staging")


def test_schedule_argument_fits_the_workflow_and_the_template(env):
    *_, argument = scheduled_launch(env, *SCHEDULE, "--threshold", "4", "--worker_zone", "us-central1-a")
    # Fields of Dataflow's FlexTemplateRuntimeEnvironment (v1b3 REST API).
    runtime_environment = {
        "additionalExperiments", "additionalPipelineOptions", "additionalUserLabels",
        "autoscalingAlgorithm", "diskSizeGb", "dumpHeapOnOom", "enableLauncherVmSerialPortLogging",
        "enableStreamingEngine", "flexrsGoal", "ipConfiguration", "kmsKeyName", "launcherMachineType",
        "machineType", "maxWorkers", "network", "numWorkers", "saveHeapDumpsToGcsPath",
        "sdkContainerImage", "serviceAccountEmail", "stagingLocation", "streamingMode", "subnetwork",
        "tempLocation", "workerRegion", "workerZone", "zone"}
    assert set(argument["environment"]) <= runtime_environment
    assert argument["environment"]["workerZone"] == "us-central1-a"
    metadata = json.loads((REPO / "templates" / "koedu_score_metadata.json").read_text())
    assert set(argument["parameters"]) <= {p["name"] for p in metadata["parameters"]}
    assert all(isinstance(v, str) for v in argument["parameters"].values()), "template parameters are strings"
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((REPO / "templates" / "score_workflow.yaml").read_text())
    steps = {name: step for entry in workflow["main"]["steps"] for name, step in entry.items()}
    launch_step = steps["launch_job"]["try"]
    assert launch_step["call"] == "googleapis.dataflow.v1b3.projects.locations.flexTemplates.launch"
    parameter = launch_step["args"]["body"]["launchParameter"]
    assert parameter["environment"] == "${args.environment}"
    text = (REPO / "templates" / "score_workflow.yaml").read_text()
    for key in ("project", "region", "template", "job_prefix", "date_offset_days", "parameters",
                "max_attempts", "crawl_wait_hours"):
        assert key in argument and (f"args.{key}" in text or f'"{key}"' in text)
    assert '"crawl_complete_marker"' in text and "crawl_complete_marker" not in argument


def test_schedule_waits_and_retries_with_defaults(env):
    *_, argument = scheduled_launch(env, *SCHEDULE)
    assert (argument["max_attempts"], argument["crawl_wait_hours"]) == (3, 6)
    assert "crawl_complete_marker" not in argument, "no marker: the workflow launches at once"


def test_schedule_passes_the_crawl_marker_and_retry_settings(env):
    *_, argument = scheduled_launch(env, *SCHEDULE, "--crawl_complete_marker", "gs://crawl/{date}/_SUCCESS",
                                    "--crawl_wait_hours", "1.5", "--max_attempts", "5")
    assert argument["crawl_complete_marker"] == "gs://crawl/{date}/_SUCCESS"
    assert (argument["crawl_wait_hours"], argument["max_attempts"]) == (1.5, 5)
    deploy, describe, create = dry(env, *SCHEDULE, extra_env={
        "KOEDU_CRAWL_COMPLETE_MARKER": "gs://crawl/{date}/DONE", "KOEDU_CRAWL_WAIT_HOURS": "0",
        "KOEDU_MAX_ATTEMPTS": "1"})
    argument = json.loads(json.loads(options(create)["--message-body"])["argument"])
    assert (argument["crawl_complete_marker"], argument["crawl_wait_hours"], argument["max_attempts"]) == (
        "gs://crawl/{date}/DONE", 0, 1)
    # flags win over the variables
    *_, argument = scheduled_launch(env, *SCHEDULE, "--max_attempts", "2")
    assert argument["max_attempts"] == 2


@pytest.mark.parametrize("flag, value", [
    ("--max_attempts", "0"), ("--max_attempts", "two"), ("--crawl_wait_hours", "-1"),
    ("--crawl_wait_hours", "06"), ("--crawl_wait_hours", "1e3"), ("--date_offset_days", "01"),
    ("--crawl_complete_marker", "crawl/{date}/_SUCCESS"), ("--crawl_complete_marker", "gs://crawl"),
    ("--crawl_complete_marker", "gs://crawl/a\tb"),
])
def test_schedule_rejects_bad_waiting_settings(env, flag, value):
    result = launch(env, *SCHEDULE, flag, value, "--dry_run", extra_env=CLOUD)
    assert result.returncode == 2 and result.stdout == ""
    assert flag in result.stderr


def test_schedule_notes_a_marker_without_date(env):
    result = launch(env, *SCHEDULE, "--crawl_complete_marker", "gs://crawl/latest/_SUCCESS", "--dry_run",
                    extra_env=CLOUD)
    assert result.returncode == 0 and "contains no {date}" in result.stderr


def test_schedule_argument_survives_quotes_and_backslashes(env):
    odd = 'gs://crawl/{date}/"quoted" \\back\\slash/*.jsonl'
    *_, argument = scheduled_launch(env, "schedule", "--image", IMAGE, "--input", odd, "--output",
                                    "gs://o/{date}", "--service_account", SA)
    assert argument["parameters"]["input"] == odd
    result = launch(env, *SCHEDULE, "--model", "gs://m\tx", "--dry_run", extra_env=CLOUD)
    assert result.returncode == 2 and result.stdout == "" and "--model" in result.stderr


def test_schedule_updates_an_existing_job(env):
    result = launch(env, *SCHEDULE, extra_env={**CLOUD, "KOEDU_FAKE_DESCRIBE_RC": "0"})
    assert result.returncode == 0, result.stderr
    assert [c[:5] for c in calls(env)] == [
        ["gcloud", "workflows", "deploy", "koedu-score", "--project=proj-1"],
        ["gcloud", "scheduler", "jobs", "describe", "koedu-score-daily"],
        ["gcloud", "scheduler", "jobs", "update", "http"],
    ]


def test_train_creates_a_tpu_vm_and_runs_on_all_hosts(env):
    describe, create, pack, copy, install, train = dry(
        env, *TRAIN, "--spot", "--", "--epochs", "3", "--learning_rate", "1e-4", "--text_field", "본문 text")
    assert describe[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "describe"]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "koedu-train"]
    opts = options(create)
    assert (opts["--accelerator-type"], opts["--version"], opts["--zone"]) == (
        "v5litepod-8", "v2-alpha-tpuv5-lite", "us-west4-a")
    assert "--spot" in create
    assert pack[0] == "tar" and {"setup.py", "model", "pipeline", "train"} <= set(pack)
    assert copy[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in copy
    assert install[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in install
    assert ".[tpu]" in options(install)["--command"]
    assert "--worker=all" in train
    change_dir, run_line = options(train)["--command"].split(" && ")
    assert change_dir == "cd ~/koedu"
    (run,) = words(run_line + "\n")  # set -- expands the ~ to this machine's $HOME: fine here
    assert run[0].endswith("/koedu-venv/bin/python") and run[1:3] == ["-m", "train.run"]
    assert run[3:] == ["--data=gs://labels/*.parquet", "--output=gs://models/run1", "--epochs", "3",
                       "--learning_rate", "1e-4", "--text_field", "본문 text"]


@pytest.mark.parametrize("accelerator, hosts", [
    ("v5litepod-8", 1), ("v6e-8", 1), ("v5p-8", 1), ("v4-8", 1),
    ("v5litepod-16", 2), ("v6e-32", 4), ("v5p-16", 2), ("v4-32", 4)])
def test_train_joins_the_hosts_of_a_multi_host_slice(env, accelerator, hosts):
    # At most 8 chips (v5e, v6e) or TensorCores (v4, v5p) per host: a larger slice is several
    # hosts, each running the command, and train.run must join them (jax.distributed).
    *_, train = dry(env, *TRAIN, "--accelerator_type", accelerator, "--", "--epochs", "3")
    (run,) = words(options(train)["--command"].split(" && ")[1] + "\n")
    assert "--worker=all" in train
    expected = ["--distributed"] if hosts > 1 else []
    assert run[3:] == ["--data=gs://labels/*.parquet", "--output=gs://models/run1", *expected,
                       "--epochs", "3"]


@pytest.mark.parametrize("accelerator, runtime", [
    ("v6e-8", "v2-alpha-tpuv6e"), ("v5p-8", "v2-alpha-tpuv5"), ("v4-8", "tpu-ubuntu2204-base")])
def test_train_runtime_follows_the_accelerator(env, accelerator, runtime):
    commands = dry(env, *TRAIN, "--accelerator_type", accelerator)
    assert options(commands[1])["--version"] == runtime


def test_train_reuses_an_existing_tpu_vm(env):
    result = launch(env, *TRAIN, extra_env={**CLOUD, "KOEDU_FAKE_DESCRIBE_RC": "0"})
    assert result.returncode == 0, result.stderr
    assert not any("create" in call for call in calls(env))


@pytest.mark.parametrize("args", [
    SCORE + ["--job_name", "fixed", "--", "--batch_size", "8", "--text_field", "본문 text"], ["image"],
    ["image", "--builder", "docker"], ["template"], SCHEDULE, TRAIN + ["--", "--max_steps", "10"]])
def test_a_real_run_makes_exactly_the_printed_calls(env, args):
    printed = dry(env, *args)
    result = launch(env, *args, extra_env=CLOUD)
    assert result.returncode == 0, result.stderr
    assert calls(env) == printed
