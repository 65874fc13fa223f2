"""What each verb runs. Each function checks what is left to check and returns the plan, a
function of a Shell (launcher/cli.py) that prints and runs the commands in order: nothing is
printed before every setting has been checked.
"""
from __future__ import annotations

import json
import os
import re
import shlex

from launcher.shapes import Refused

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW_SOURCE = "templates/score_workflow.yaml"
TEMPLATE_METADATA = "templates/koedu_score_metadata.json"
CLOUDBUILD_CONFIG = "templates/cloudbuild.yaml"
# uv gives the TPU VM a Python 3.11 next to the runtime image's own (3.10 on Ubuntu 22.04).
UV_VERSION = "0.13.9"
# The options of pipeline.run that `score` and `schedule` hand on when given.
PASSED_ON = ("input", "output", "model", "threshold")


def _passed_on(args) -> dict:
  return {name: getattr(args, name) for name in PASSED_ON if getattr(args, name) is not None}


def _require(args, *names):
  from launcher.cli import require
  require(args, *names)


def score(args, extra, environ):
  _require(args, "input", "output")

  def plan(shell):
    cmd = [environ.get("KOEDU_PYTHON", "python"), "-m", "pipeline.run", "--runner=DataflowRunner",
           f"--project={args.project}", f"--region={args.region}", f"--job_name={args.job_name}",
           f"--temp_location=gs://{args.bucket}/tmp", f"--staging_location=gs://{args.bucket}/staging",
           f"--sdk_container_image={args.image}", *args.shape.beam_flags()]
    cmd += [f"--{name}={value}" for name, value in _passed_on(args).items()] + list(extra)
    # From the repository root, so `pipeline` imports from this checkout: the image's code.
    shell.run(cmd, cwd=REPO)
  return plan


def image(args, extra, environ):
  build = args.shape.build

  def plan(shell):
    if args.builder == "cloudbuild":
      # --substitutions is a gcloud dict flag: ^;^ makes ';' its separator, as the chip bounds
      # and the extras contain commas (`gcloud topic escaping`).
      subs = {"_IMAGE": args.image, "_TARGET": build["target"], **{f"_{k}": v for k, v in build["args"].items()}}
      shell.run(["gcloud", "builds", "submit", REPO, f"--project={args.project}",
                 f"--config={os.path.join(REPO, CLOUDBUILD_CONFIG)}", "--ignore-file=.dockerignore",
                 "--substitutions=^;^" + ";".join(f"{k}={v}" for k, v in subs.items())])
    else:
      # Workers are x86-64; the platform flag keeps an arm64 laptop from building for itself.
      cmd = ["docker", "build", "--platform=linux/amd64", f"--target={build['target']}"]
      for key, value in build["args"].items():
        cmd += ["--build-arg", f"{key}={value}"]
      shell.run(cmd + ["--tag", args.image, REPO])
      shell.run(["docker", "push", args.image])
  return plan


def template(args, extra, environ):
  flags = args.shape.template_flags()

  def plan(shell):
    shell.run(["gcloud", "dataflow", "flex-template", "build", args.template_path, f"--project={args.project}",
               f"--image={args.image}", "--sdk-language=PYTHON",
               f"--metadata-file={os.path.join(REPO, TEMPLATE_METADATA)}", *flags,
               f"--temp-location=gs://{args.bucket}/tmp", f"--staging-location=gs://{args.bucket}/staging"])
  return plan


def schedule_argument(args) -> dict:
  """Each scheduled execution's argument: the launch request with {date} still in the parameter
  values, and how to wait and retry (templates/score_workflow.yaml fills in the date)."""
  environment = {"tempLocation": f"gs://{args.bucket}/tmp", "stagingLocation": f"gs://{args.bucket}/staging",
                 "sdkContainerImage": args.image, **args.shape.runtime_environment()}
  argument = {"project": args.project, "region": args.region, "template": args.template_path,
              "job_prefix": args.workflow, "date_offset_days": int(args.date_offset_days),
              "max_attempts": int(args.max_attempts), "crawl_wait_hours": json.loads(args.crawl_wait_hours),
              "parameters": _passed_on(args), "environment": environment}
  if args.crawl_complete_marker:
    argument["crawl_complete_marker"] = args.crawl_complete_marker
  return argument


def schedule(args, extra, environ):
  from launcher.cli import Usage, note
  _require(args, "input", "output", "service_account")
  checks = [("date_offset_days", r"0|[1-9][0-9]*", "a whole number"), ("max_attempts", r"[1-9][0-9]*", "a positive integer"),
            ("crawl_wait_hours", r"(0|[1-9][0-9]*)(\.[0-9]+)?", "a number of hours such as 6 or 1.5")]
  for name, pattern, what in checks:
    if not re.fullmatch(pattern, str(getattr(args, name))):
      raise Usage(f"--{name} must be {what}, got '{getattr(args, name)}'")
  marker = args.crawl_complete_marker
  if marker and not re.fullmatch(r"gs://[^/]+/.+", marker):
    raise Usage(f"--crawl_complete_marker (or KOEDU_CRAWL_COMPLETE_MARKER) must be a gs://BUCKET/OBJECT URL, got '{marker}'")
  if not re.fullmatch(r"[a-z][-a-z0-9]*", args.workflow):
    raise Usage("--workflow must be lowercase letters, digits and '-' (it prefixes Dataflow job names)")
  body = json.dumps({"argument": json.dumps(schedule_argument(args))})
  if "{date}" not in args.input + args.output:
    note("neither --input nor --output contains {date}: every run would score the same paths")
  if marker and "{date}" not in marker:
    note("--crawl_complete_marker contains no {date}: every run would wait for the same object")
  where = [f"--project={args.project}", f"--location={args.region}"]
  uri = (f"https://workflowexecutions.googleapis.com/v1/projects/{args.project}/locations/{args.region}"
         f"/workflows/{args.workflow}/executions")

  def plan(shell):
    shell.run(["gcloud", "workflows", "deploy", args.workflow, *where,
               f"--source={os.path.join(REPO, WORKFLOW_SOURCE)}", f"--service-account={args.service_account}"])
    exists = shell.probe(["gcloud", "scheduler", "jobs", "describe", args.scheduler_job, *where]) is not None
    if shell.dry:
      note(f"dry run: if scheduler job {args.scheduler_job} exists, 'update http' runs instead of 'create http'")
    shell.run(["gcloud", "scheduler", "jobs", "update" if exists else "create", "http", args.scheduler_job, *where,
               f"--schedule={args.cron}", f"--time-zone={args.time_zone}", f"--uri={uri}", "--http-method=POST",
               f"--message-body={body}", f"--oauth-service-account-email={args.service_account}"])
  return plan


RUNTIMES = {"v6e": "v2-alpha-tpuv6e", "v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
            "v4": "tpu-ubuntu2204-base"}


def train(args, extra, environ):
  from launcher.cli import Usage, note
  _require(args, "zone", "data", "output")
  family, _, chips = args.accelerator_type.rpartition("-")
  if family not in RUNTIMES or not chips.isdigit():
    raise Usage(f"unknown TPU accelerator type '{args.accelerator_type}' (--accelerator_type / "
                "KOEDU_TRAIN_ACCELERATOR): v5litepod-N, v6e-N, v5p-N or v4-N")
  runtime = args.runtime_version or RUNTIMES[family]
  where = [f"--project={args.project}", f"--zone={args.zone}"]
  tarball = os.path.join(environ.get("TMPDIR", "/tmp"), f"koedu-src-{args.tpu_name}.tar.gz")
  # At most 8 chips (v5e, v6e) or TensorCores (v4, v5p) per host: a larger slice is several
  # hosts, one JAX process each, which train.run joins (--distributed makes it explicit).
  words = [f"--data={args.data}", f"--output={args.output}", *(["--distributed"] if int(chips) > 8 else []), *extra]
  train_cmd = "cd ~/koedu && ~/koedu-venv/bin/python -m train.run " + " ".join(shlex.quote(w) for w in words)
  install = ("set -e; rm -rf ~/koedu; mkdir -p ~/koedu; tar -xzf ~/koedu-src.tar.gz -C ~/koedu; "
             f"python3 -m pip install --user --quiet uv=={UV_VERSION}; python3 -m uv venv --allow-existing "
             "--python 3.11 ~/koedu-venv; cd ~/koedu; python3 -m uv pip install --python ~/koedu-venv/bin/python '.[tpu]'")
  vm = ["gcloud", "compute", "tpus", "tpu-vm"]

  def plan(shell):
    found = shell.probe([*vm, "describe", args.tpu_name, *where, "--format=value(acceleratorType)"])
    if found is None:
      if shell.dry:
        note(f"dry run: if TPU VM {args.tpu_name} exists with type {args.accelerator_type}, it is reused "
             "instead of created; with another type the launch stops")
      shell.run([*vm, "create", args.tpu_name, *where, f"--accelerator-type={args.accelerator_type}",
                 f"--version={runtime}", *(["--spot"] if args.spot else [])])
    elif found.strip() != args.accelerator_type:
      raise Refused(f"TPU VM {args.tpu_name} exists with type {found.strip() or '(none reported)'}, not the "
                    f"requested {args.accelerator_type}: delete it (gcloud compute tpus tpu-vm delete "
                    f"{args.tpu_name} --zone={args.zone}) or pass another --tpu_name")
    else:
      note(f"reusing TPU VM {args.tpu_name} ({found.strip()})")
    # Only what `pip install .` needs: the source, without caches, tests or local venvs.
    shell.run(["tar", "-czf", tarball, "--exclude=__pycache__", "-C", REPO, "setup.py", "options", "model",
               "pipeline", "train"])
    shell.run([*vm, "scp", tarball, f"{args.tpu_name}:koedu-src.tar.gz", *where, "--worker=all"])
    shell.run([*vm, "ssh", args.tpu_name, *where, "--worker=all", f"--command={install}"])
    # Every host runs the same command at once; on a multi-host slice the processes join.
    shell.run([*vm, "ssh", args.tpu_name, *where, "--worker=all", f"--command={train_cmd}"])
  return plan
