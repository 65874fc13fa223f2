"""launch.sh's verbs: flags and KOEDU_* variables in, checked settings, the commands run or printed.

Everything is checked before the first command is printed: a usage error exits 2 with a
message naming the flag (and its variable), and prints nothing on stdout.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys

from launcher import shapes, verbs
from options import catalog, declare

VERBS = {
    "score": "submit `python -m pipeline.run` to Dataflow with TPU or GPU workers",
    "image": "build and push the worker container (Dockerfile) for the chosen TPU or for GPUs",
    "template": "build the Dataflow Flex Template that scheduled runs launch",
    "schedule": "deploy the corpus-build workflow and create or update its Cloud Scheduler job",
    "train": "create or reuse a TPU VM and run `python -m train.run` on all its hosts",
}


class Usage(Exception):
  """A usage error: exit status 2, nothing run."""


def usage() -> str:
  lines = ["Usage: launch.sh VERB [options] [-- extra args]", "", "Verbs"]
  lines += [f"  {verb:<10} {what}" for verb, what in VERBS.items()]
  lines += ["", "Every verb takes --dry_run: print each command it would run, one per line and shell-quoted,",
            "and run none. Flags win over environment variables. `launch.sh VERB --help`: the verb's",
            "flags; docs/options.md: all of them. Exit status 2: a usage error, found before any",
            "command is printed or run.", "", "Flags and their variables"]
  seen = set()
  for o in catalog.OPTIONS:
    verbs_of = [u.split()[1] for u in o.used_by if u.startswith("launch.sh ")]
    if verbs_of and o.name not in seen:
      seen.add(o.name)
      lines.append(f"  --{o.name:<24} {o.env or '':<28} {','.join(verbs_of)}")
  return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # argparse would print usage and exit; say it once, our way
    raise Usage(f"{self.prog}: {message}")


def parse(argv: list[str], environ) -> tuple[str, argparse.Namespace, list[str]]:
  verb, rest = argv[0], argv[1:]
  if verb not in VERBS:
    raise Usage(f"unknown verb '{verb}' (try --help)")
  extra = []
  if "--" in rest:
    rest, extra = rest[:rest.index("--")], rest[rest.index("--") + 1:]
  p = _Parser(prog=f"launch.sh {verb}", description=VERBS[verb], allow_abbrev=False)
  args = declare.add_arguments(p, f"launch.sh {verb}", environ=environ).parse_args(rest)
  if extra and verb not in ("score", "train"):
    raise Usage(f"{verb} takes no arguments after -- (only score and train pass them on)")
  return verb, args, extra


def _positive(args, name: str) -> int:
  value = str(getattr(args, name))
  if not re.fullmatch(r"[1-9][0-9]*", value):
    raise Usage(f"--{name}{_env(name)} must be a positive integer, got '{value}'")
  return int(value)


def _env(name: str, verb: str = "or") -> str:
  env = next((o.env for o in catalog.OPTIONS if o.name == name and o.env), None)
  return f" ({verb} {env})" if env else ""


def require(args, *names: str) -> None:
  for name in names:
    if not getattr(args, name):
      raise Usage(f"missing --{name}{_env(name, 'or set')}")


def check(verb: str, args) -> None:
  """Fills in derived settings (args.shape, args.image, ...), or raises Usage."""
  for name, value in vars(args).items():
    if isinstance(value, str) and re.search(r"[\x00-\x1f\x7f]", value):
      raise Usage(f"--{name} must not contain control characters: {value!r}")
  require(args, "project")
  if verb == "train":
    return
  require(args, "region")
  if verb in ("score", "template", "schedule"):
    require(args, "bucket")
    args.bucket = args.bucket.removeprefix("gs://").rstrip("/")
    if "/" in args.bucket:
      raise Usage(f"--bucket takes a bucket name, not a path: '{args.bucket}'")
  sizes = {}
  if verb != "image":
    sizes = {n: _positive(args, n) for n in ("num_workers", "max_num_workers", "disk_size_gb", "harness_threads")}
    sizes["worker_zone"] = args.worker_zone or None
    if sizes["num_workers"] > sizes["max_num_workers"]:
      raise Usage(f"--num_workers ({sizes['num_workers']}) exceeds --max_num_workers ({sizes['max_num_workers']})")
  try:
    if args.accelerator:
      gpus = _positive(args, "gpus") if args.gpus else None
      args.shape = shapes.gpu_shape(args.accelerator, gpus, getattr(args, "machine_type", None) or None, **sizes)
    else:
      args.shape = shapes.tpu_shape(args.tpu_type, args.tpu_topology, **sizes)
  except shapes.Refused as err:
    raise Usage(str(err)) from None
  args.image = args.image or default_image(args, args.shape.image_flavour)
  if verb in ("template", "schedule"):
    args.template_path = args.template_path or f"gs://{args.bucket}/templates/koedu-score-{args.shape.name}.json"
  if verb == "image" and args.builder not in ("cloudbuild", "docker"):
    raise Usage(f"unknown --builder '{args.builder}' (or KOEDU_BUILDER): cloudbuild or docker")
  if verb == "score" and not args.job_name:
    args.job_name = "koedu-score-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def default_image(args, flavour: str) -> str:
  """Names the accelerator (a TPU image has its TPU_* settings baked in) and the source revision,
  so `score` submits exactly the code `image` built from this checkout."""
  try:
    rev = subprocess.run(["git", "-C", verbs.REPO, "describe", "--always", "--dirty"], capture_output=True,
                         text=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    rev = ""
  return f"{args.region}-docker.pkg.dev/{args.project}/{args.repository}/koedu-worker:{flavour}-{rev or 'dev'}"


class Shell:
  """Prints every command, one shell-quoted line each, so a dry run pastes back into a shell;
  runs them unless dry. A probe (a read-only describe) answers its output when it succeeded,
  None otherwise; in a dry run it answers None, so the printed plan shows the create path."""

  def __init__(self, dry: bool, out=sys.stdout):
    self.dry, self.out = dry, out

  def run(self, argv: list[str], cwd: str | None = None) -> None:
    print(shlex.join(argv), file=self.out, flush=True)
    if not self.dry:
      subprocess.run(argv, cwd=cwd, check=True)

  def probe(self, argv: list[str]) -> str | None:
    print(shlex.join(argv), file=self.out, flush=True)
    if self.dry:
      return None
    result = subprocess.run(argv, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def note(message: str) -> None:
  print(f"launch.sh: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None, environ=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  environ = os.environ if environ is None else environ
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage(), file=sys.stdout if argv else sys.stderr)
    return 0 if argv else 2
  try:
    verb, args, extra = parse(argv, environ)
    check(verb, args)
    plan = getattr(verbs, verb)(args, extra, environ)  # checks the rest; runs nothing yet
    plan(Shell(args.dry_run))
  except (Usage, shapes.Refused) as err:
    note(str(err))
    return 2
  except subprocess.CalledProcessError as err:
    note(f"{shlex.join(err.cmd)} failed with exit status {err.returncode}")
    return 1
  return 0
