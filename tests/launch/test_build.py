"""launch.sh: `image`, `template`, `schedule` and `train`, and real runs making the printed calls."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch.launcher import (CLOUD, IMAGE, REPO, SA, SCHEDULE, SCORE, TRAIN, calls, docker_build, dry,
                                   launch, request, schedule_argument)

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _stages():
  return set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, re.M))


def _declared_args(stage):
  """ARGs visible in `stage`: the global ones before the first FROM, those of its stage and of
  the stages it is built FROM."""
  blocks = re.split(r"^(?=FROM )", DOCKERFILE, flags=re.M)
  declared = set(re.findall(r"^ARG (\w+)", blocks[0], re.M))
  by_name = {re.match(r"FROM (\S+) AS (\S+)", b).group(2): b for b in blocks[1:] if " AS " in b.splitlines()[0]}
  while stage in by_name:
    declared |= set(re.findall(r"^ARG (\w+)", by_name[stage], re.M))
    stage = re.match(r"FROM (\S+)", by_name[stage]).group(1)
  return declared


def _extras():
  tree = ast.parse((REPO / "setup.py").read_text())
  (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "EXTRAS_REQUIRE"]
  return set(ast.literal_eval(node.value))


def _check_build_against_the_dockerfile(build):
  assert build["target"] in _stages(), f"no stage {build['target']} in the Dockerfile"
  assert set(build["args"]) <= _declared_args(build["target"]), "a build arg the stage does not declare"
  for extra in build["args"].get("KOEDU_EXTRAS", "tpu,gcp").split(","):
    if extra == "cuda" and "cuda" not in _extras():
      pytest.skip("setup.py has no cuda extra yet (the gpu branch adds it)")
    assert extra in _extras(), f"setup.py has no extra {extra}"


@pytest.mark.parametrize("shape, target, args", [
    (["--tpu_topology", "2x2"], "tpu", {"TPU_ACCELERATOR_TYPE": "v5litepod-4", "TPU_CHIPS_PER_HOST_BOUNDS": "2,2,1"}),
    (["--accelerator", "nvidia-h100-80gb"], "cuda", {"KOEDU_EXTRAS": "cuda,gcp"}),
])
def test_image_cloud_build_passes_the_target_and_build_args(env, shape, target, args):
  (cmd,) = dry(env, "image", "--image", IMAGE, *shape)
  r = request(cmd)
  assert r.command == ["gcloud", "builds", "submit", str(REPO)]
  assert Path(r.flags["--config"]) == REPO / "templates" / "cloudbuild.yaml"
  assert r.flags["--ignore-file"] == ".dockerignore"
  # gcloud's alternate-delimiter syntax: ^;^ then ';'-separated KEY=VALUE (values have commas).
  assert r.flags["--substitutions"].startswith("^;^")
  subs = dict(item.split("=", 1) for item in r.flags["--substitutions"][3:].split(";"))
  assert subs == {"_IMAGE": IMAGE, "_TARGET": target, **{f"_{k}": v for k, v in args.items()}}
  # What Cloud Build runs: cloudbuild.yaml's docker build with these substitutions.
  yaml = pytest.importorskip("yaml")
  config = yaml.safe_load((REPO / "templates" / "cloudbuild.yaml").read_text())
  (step,) = config["steps"]
  values = {**config["substitutions"], **subs}
  build = docker_build(["docker", *(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], a) for a in step["args"])])
  assert build["target"] == target and build["tag"] == IMAGE
  # The yaml passes every build arg; those the launcher did not set keep their defaults and
  # are unused by the other target.
  assert {k: build["args"][k] for k in args} == args
  _check_build_against_the_dockerfile({**build, "args": args})


@pytest.mark.parametrize("shape, target, args", [
    ([], "tpu", {"TPU_ACCELERATOR_TYPE": "v5litepod-1", "TPU_CHIPS_PER_HOST_BOUNDS": "1,1,1"}),
    (["--accelerator", "nvidia-l4"], "cuda", {"KOEDU_EXTRAS": "cuda,gcp"}),
])
def test_image_docker_builds_the_stage_and_pushes(env, shape, target, args):
  build, push = dry(env, "image", "--image", IMAGE, "--builder", "docker", *shape)
  assert "--platform=linux/amd64" in build
  parsed = docker_build(build)
  assert parsed == {"target": target, "args": args, "tag": IMAGE, "context": str(REPO)}
  assert push == ["docker", "push", IMAGE]
  _check_build_against_the_dockerfile(parsed)
  assert "apache/beam_python3.11_sdk:2.77.0" in DOCKERFILE
  assert DOCKERFILE.count('ENTRYPOINT ["/opt/apache/beam/boot"]') == 1
  assert re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, re.M)[-1] == "tpu", "docker build . gives the TPU image"


def test_template_builds_a_flex_template_with_the_worker_shape(env):
  (cmd,) = dry(env, "template", "--image", IMAGE, "--worker_zone", "us-central1-a")
  r = request(cmd)
  assert r.command == ["gcloud", "dataflow", "flex-template", "build", "gs://bkt/templates/koedu-score-v5litepod-1.json"]
  assert (r.flags["--image"], r.flags["--sdk-language"]) == (IMAGE, "PYTHON")
  assert Path(r.flags["--metadata-file"]) == REPO / "templates" / "koedu_score_metadata.json"
  assert r.flags["--worker-machine-type"] == "ct5lp-hightpu-1t"
  assert r.list("--additional-experiments") == [
      "worker_accelerator=type:tpu-v5-lite-podslice;topology:1x1", "no_use_multiple_sdk_containers"]
  assert r.list("--additional-pipeline-options") == ["number_of_worker_harness_threads=12", "disk_size_gb=100"]
  assert r.flags["--worker-zone"] == "us-central1-a"
  (gpu,) = dry(env, "template", "--image", IMAGE, "--accelerator", "nvidia-l4")
  assert request(gpu).command[-1] == "gs://bkt/templates/koedu-score-nvidia-l4-1.json"


def test_flex_template_entry_point_runs_the_pipeline_cli(env):
  # In the image koedu is installed; here PYTHONPATH stands in for that.
  result = subprocess.run([sys.executable, str(REPO / "templates" / "flex_main.py"), "--help"],
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "--input" in result.stdout and "--threshold" in result.stdout


def scheduled_launch(env, *args):
  deploy, describe, create = dry(env, *args)
  return request(deploy), request(describe), request(create), schedule_argument(create)


def test_schedule_deploys_the_workflow_and_schedules_it(env):
  deploy, describe, create, argument = scheduled_launch(
      env, *SCHEDULE, "--model", "gs://models/run1", "--cron", "30 2 * * 1", "--date_offset_days", "1")
  assert deploy.command == ["gcloud", "workflows", "deploy", "koedu-score"]
  assert Path(deploy.flags["--source"]) == REPO / "templates" / "score_workflow.yaml"
  assert deploy.flags["--service-account"] == SA
  assert describe.command == ["gcloud", "scheduler", "jobs", "describe", "koedu-score-daily"]
  assert create.command == ["gcloud", "scheduler", "jobs", "create", "http", "koedu-score-daily"]
  assert create.flags["--uri"] == ("https://workflowexecutions.googleapis.com/v1/projects/proj-1/"
                                   "locations/us-central1/workflows/koedu-score/executions")
  assert (create.flags["--schedule"], create.flags["--http-method"]) == ("30 2 * * 1", "POST")
  assert create.flags["--oauth-service-account-email"] == SA
  assert argument["parameters"] == {
      "input": "gs://crawl/{date}/*.jsonl.zst", "output": "gs://corpus/{date}", "model": "gs://models/run1"}
  assert argument["template"] == "gs://bkt/templates/koedu-score-v5litepod-1.json"
  assert argument["date_offset_days"] == 1
  environment = argument["environment"]
  assert environment["sdkContainerImage"] == IMAGE
  assert environment["machineType"] == "ct5lp-hightpu-1t"
  assert environment["additionalExperiments"] == [
      "worker_accelerator=type:tpu-v5-lite-podslice;topology:1x1", "no_use_multiple_sdk_containers"]
  assert environment["additionalPipelineOptions"] == ["number_of_worker_harness_threads=12", "disk_size_gb=100"]
  assert (environment["numWorkers"], environment["maxWorkers"], environment["diskSizeGb"]) == (1, 4, 100)
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
  assert launch_step["args"]["body"]["launchParameter"]["environment"] == "${args.environment}"
  text = (REPO / "templates" / "score_workflow.yaml").read_text()
  for key in ("project", "region", "template", "job_prefix", "date_offset_days", "parameters",
              "max_attempts", "crawl_wait_hours"):
    assert key in argument and (f"args.{key}" in text or f'"{key}"' in text)
  assert '"crawl_complete_marker"' in text and "crawl_complete_marker" not in argument


def test_schedule_with_gpu_workers(env):
  *_, argument = scheduled_launch(env, *SCHEDULE, "--accelerator", "nvidia-l4", "--gpus", "2")
  environment = argument["environment"]
  assert environment["machineType"] == "g2-standard-24"
  assert environment["additionalExperiments"] == [
      "worker_accelerator=type:nvidia-l4;count:2;install-nvidia-driver", "no_use_multiple_sdk_containers"]
  assert argument["template"] == "gs://bkt/templates/koedu-score-nvidia-l4-2.json"
  assert environment["sdkContainerImage"] == IMAGE


def test_schedule_waits_and_retries_with_defaults(env):
  *_, argument = scheduled_launch(env, *SCHEDULE)
  assert (argument["max_attempts"], argument["crawl_wait_hours"]) == (3, 6)
  assert "crawl_complete_marker" not in argument, "no marker: the workflow launches at once"


def test_schedule_passes_the_crawl_marker_and_retry_settings(env):
  *_, argument = scheduled_launch(env, *SCHEDULE, "--crawl_complete_marker", "gs://crawl/{date}/_SUCCESS",
                                  "--crawl_wait_hours", "1.5", "--max_attempts", "5")
  assert argument["crawl_complete_marker"] == "gs://crawl/{date}/_SUCCESS"
  assert (argument["crawl_wait_hours"], argument["max_attempts"]) == (1.5, 5)
  *_, create = dry(env, *SCHEDULE, extra_env={
      "KOEDU_CRAWL_COMPLETE_MARKER": "gs://crawl/{date}/DONE", "KOEDU_CRAWL_WAIT_HOURS": "0",
      "KOEDU_MAX_ATTEMPTS": "1"})
  argument = schedule_argument(create)
  assert (argument["crawl_complete_marker"], argument["crawl_wait_hours"], argument["max_attempts"]) == (
      "gs://crawl/{date}/DONE", 0, 1)
  *_, argument = scheduled_launch(env, *SCHEDULE, "--max_attempts", "2")  # flags win over the variables
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


def test_schedule_argument_survives_quotes_backslashes_and_unicode(env):
  odd = 'gs://crawl/{date}/"quoted" \\back\\slash/말뭉치 */*.jsonl'
  *_, argument = scheduled_launch(env, "schedule", "--image", IMAGE, "--input", odd, "--output",
                                  "gs://o/{date}", "--service_account", SA)
  assert argument["parameters"]["input"] == odd
  result = launch(env, *SCHEDULE, "--model", "gs://m\tx", "--dry_run", extra_env=CLOUD)
  assert result.returncode == 2 and result.stdout == "" and "--model" in result.stderr


def test_schedule_updates_an_existing_job(env):
  result = launch(env, *SCHEDULE, extra_env={**CLOUD, "KOEDU_FAKE_DESCRIBE_RC": "0"})
  assert result.returncode == 0, result.stderr
  assert [request(c).command for c in calls(env)] == [
      ["gcloud", "workflows", "deploy", "koedu-score"],
      ["gcloud", "scheduler", "jobs", "describe", "koedu-score-daily"],
      ["gcloud", "scheduler", "jobs", "update", "http", "koedu-score-daily"]]


def _train_command(ssh):
  change_dir, run_line = request(ssh).flags["--command"].split(" && ")
  assert change_dir == "cd ~/koedu"
  import shlex
  return shlex.split(run_line)


def test_train_creates_a_tpu_vm_and_runs_on_all_hosts(env):
  describe, create, pack, copy, install, train = dry(
      env, *TRAIN, "--spot", "--", "--epochs", "3", "--learning_rate", "1e-4", "--text_field", "본문 text")
  assert request(describe).command == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "koedu-train"]
  assert request(describe).flags["--format"] == "value(acceleratorType)"
  c = request(create)
  assert c.command == ["gcloud", "compute", "tpus", "tpu-vm", "create", "koedu-train"]
  assert (c.flags["--accelerator-type"], c.flags["--version"], c.flags["--zone"]) == (
      "v5litepod-8", "v2-alpha-tpuv5-lite", "us-west4-a")
  assert c.flags["--spot"] is True
  assert pack[0] == "tar" and {"setup.py", "options", "model", "pipeline", "train"} <= set(pack)
  assert request(copy).command[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  for ssh in (install, train):
    assert request(ssh).command[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    assert request(ssh).flags["--worker"] == "all"
  assert ".[tpu]" in request(install).flags["--command"]
  run = _train_command(train)
  assert run[0] == "~/koedu-venv/bin/python" and run[1:3] == ["-m", "train.run"]
  from train.run import parser
  args = parser().parse_args(run[3:])
  assert (args.data, args.output, args.epochs, args.learning_rate, args.text_field) == (
      ("gs://labels/*.parquet",), "gs://models/run1", 3, 1e-4, "본문 text")
  assert not args.distributed


@pytest.mark.parametrize("accelerator, hosts", [
    ("v5litepod-8", 1), ("v6e-8", 1), ("v5p-8", 1), ("v4-8", 1),
    ("v5litepod-16", 2), ("v6e-32", 4), ("v5p-16", 2), ("v4-32", 4)])
def test_train_joins_the_hosts_of_a_multi_host_slice(env, accelerator, hosts):
  # At most 8 chips (v5e, v6e) or TensorCores (v4, v5p) per host: a larger slice is several
  # hosts, each running the command, and train.run must join them (jax.distributed).
  *_, train = dry(env, *TRAIN, "--accelerator_type", accelerator, "--", "--epochs", "3")
  from train.run import parser
  assert parser().parse_args(_train_command(train)[3:]).distributed == (hosts > 1)


@pytest.mark.parametrize("accelerator, runtime", [
    ("v6e-8", "v2-alpha-tpuv6e"), ("v5p-8", "v2-alpha-tpuv5"), ("v4-8", "tpu-ubuntu2204-base")])
def test_train_runtime_follows_the_accelerator(env, accelerator, runtime):
  commands = dry(env, *TRAIN, "--accelerator_type", accelerator)
  assert request(commands[1]).flags["--version"] == runtime


def test_train_reuses_an_existing_tpu_vm_of_the_requested_type(env):
  result = launch(env, *TRAIN, extra_env={**CLOUD, "KOEDU_FAKE_DESCRIBE_RC": "0",
                                          "KOEDU_FAKE_DESCRIBE_OUT": "v5litepod-8"})
  assert result.returncode == 0, result.stderr
  commands = [request(c).command for c in calls(env)]
  assert not any("create" in c for c in commands) and "reusing TPU VM koedu-train" in result.stderr
  assert commands[-1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]


def test_train_refuses_a_tpu_vm_of_another_type(env):
  result = launch(env, *TRAIN, extra_env={**CLOUD, "KOEDU_FAKE_DESCRIBE_RC": "0", "KOEDU_FAKE_DESCRIBE_OUT": "v4-8"})
  assert result.returncode == 2
  assert "koedu-train exists with type v4-8, not the requested v5litepod-8" in result.stderr
  assert [request(c).command[4] for c in calls(env)] == ["describe"], "nothing created, copied or run"


@pytest.mark.parametrize("args", [
    SCORE + ["--job_name", "fixed", "--", "--batch_size", "8", "--text_field", "본문 text"],
    SCORE + ["--job_name", "fixed", "--accelerator", "nvidia-h100-80gb", "--gpus", "8"], ["image"],
    ["image", "--builder", "docker", "--accelerator", "nvidia-l4"], ["template"], SCHEDULE,
    TRAIN + ["--", "--max_steps", "10"]])
def test_a_real_run_makes_exactly_the_printed_calls(env, args):
  printed = dry(env, *args)
  result = launch(env, *args, extra_env=CLOUD)
  assert result.returncode == 0, result.stderr
  assert calls(env) == [[Path(c[0]).name, *c[1:]] for c in printed]  # the fakes record their names


def test_a_failing_command_stops_the_launch(env, tmp_path):
  (tmp_path / "bin" / "docker").write_text("#!/usr/bin/env bash\nexit 3\n")
  result = launch(env, "image", "--builder", "docker", extra_env=CLOUD)
  assert result.returncode == 1 and "exit status 3" in result.stderr
