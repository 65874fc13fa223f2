"""Running launch.sh as a real subprocess against fake gcloud/docker/python/tar.

The fakes record every call; a dry run must leave the record empty, and a real run must make
exactly the calls its dry run printed. Option strings are checked literally and, for the
pipeline's Beam options, by parsing them with Beam itself.
"""
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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
