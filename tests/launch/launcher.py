"""Running launch.sh as a real subprocess against fake gcloud/docker/python/tar, and parsing what
it asks for into requests (gcloud's verbs and flags, Beam's options, docker's build, the
scheduler's JSON body), so that tests assert on what the cloud would receive.

The fakes record every call; a dry run must leave the record empty, and a real run must make
exactly the calls its dry run printed.
"""
import dataclasses
import json
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch.sh"
FAKES = ("gcloud", "docker", "python", "tar")
CLOUD = {"KOEDU_PROJECT": "proj-1", "KOEDU_REGION": "us-central1", "KOEDU_BUCKET": "bkt"}
IMAGE = "us-docker.pkg.dev/proj-1/koedu/worker:test"
SA = "runner@proj-1.iam.gserviceaccount.com"

# Records argv as one JSON list a line; "describe" prints $KOEDU_FAKE_DESCRIBE_OUT and exits with
# $KOEDU_FAKE_DESCRIBE_RC (default 1: the resource does not exist).
FAKE_SCRIPT = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["KOEDU_FAKE_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
if "describe" in sys.argv:
    print(os.environ.get("KOEDU_FAKE_DESCRIBE_OUT", ""))
    sys.exit(int(os.environ.get("KOEDU_FAKE_DESCRIBE_RC", "1")))
"""


def launch(env, *args, extra_env=None):
  return subprocess.run(["bash", str(LAUNCH), *args], env={**env, **(extra_env or {})},
                        capture_output=True, text=True, timeout=60)


def calls(env):
  log = Path(env["KOEDU_FAKE_LOG"])
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def dry(env, verb, *args, extra_env=None):
  """The commands a dry run prints, each split as a shell splits it; asserts it ran nothing."""
  result = launch(env, verb, "--dry_run", *args, extra_env={**CLOUD, **(extra_env or {})})
  assert result.returncode == 0, result.stderr
  assert calls(env) == [], "a dry run executed a command"
  return [shlex.split(line) for line in result.stdout.splitlines()]


@dataclasses.dataclass
class Request:
  """One gcloud/docker/tar call: the words before the first flag, its flags, and the words after."""
  command: list
  flags: dict
  rest: list

  def json(self, flag):
    return json.loads(self.flags[flag])

  def list(self, flag):
    return self.flags[flag].split(",")


def request(argv) -> Request:
  command, flags, rest = [], {}, []
  for word in argv:
    if word.startswith("--"):
      key, _, value = word.partition("=")
      flags[key] = value if "=" in word else True
    elif flags:
      rest.append(word)
    else:
      command.append(word)
  return Request(command, flags, rest)


def options(argv):
  """{--flag: value} of the --flag=value words of one command."""
  return {k: v for k, v in request(argv).flags.items() if v is not True}


def beam(argv):
  """The Beam options a pipeline.run command line sets, parsed by Beam itself."""
  from apache_beam.options.pipeline_options import PipelineOptions
  assert argv[1:3] == ["-m", "pipeline.run"]
  return PipelineOptions(argv[3:])


def docker_build(argv):
  """{"target", "args", "tag", "context"} of a `docker build` command."""
  assert argv[:2] == ["docker", "build"]
  build = {"args": {}, "target": None}
  words = iter(argv[2:])
  for word in words:
    if word == "--build-arg":
      key, value = next(words).split("=", 1)
      build["args"][key] = value
    elif word in ("--tag", "--target"):
      build[word[2:]] = next(words)
    elif word.startswith("--target="):
      build["target"] = word.split("=", 1)[1]
    elif not word.startswith("--"):
      build["context"] = word
  return build


def schedule_argument(create):
  """The workflow argument inside a `gcloud scheduler jobs create|update http` call."""
  return json.loads(request(create).json("--message-body")["argument"])


SCORE = ["score", "--image", IMAGE, "--input", "gs://crawl/2025-01-01/*.jsonl.zst",
         "--output", "gs://corpus/2025-01-01", "--threshold", "3"]
SCHEDULE = ["schedule", "--image", IMAGE, "--input", "gs://crawl/{date}/*.jsonl.zst",
            "--output", "gs://corpus/{date}", "--service_account", SA]
TRAIN = ["train", "--zone", "us-west4-a", "--data", "gs://labels/*.parquet", "--output", "gs://models/run1"]
