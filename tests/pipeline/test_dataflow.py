"""The DataflowRunner job as launch.sh submits it, described offline: Beam's --dry_run builds
the graph and the job description without a cloud project, and the TPU options must be in it."""
from __future__ import annotations

import json
import os
import shlex
import subprocess

import fsspec

from tests import gcs
from tests.checkpoints import SAMPLE_CORPUS
from tests.pipeline.conftest import REPO, run_pipeline


def launch_score_command(*args: str) -> list[str]:
  out = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "score", "--dry_run", *args],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  (line,) = [l for l in out.splitlines() if "pipeline.run" in l]
  words = shlex.split(line)
  return words[words.index("pipeline.run") + 1:]


def test_dataflow_job_description_offline(spread_model, tmp_path):
  with gcs.emulator() as host:
    fs = fsspec.filesystem("gs", use_listings_cache=False)
    fs.put(SAMPLE_CORPUS + "/", f"{gcs.BUCKET}/crawl/", recursive=True)
    fs.put(spread_model + "/", f"{gcs.BUCKET}/models/tiny/", recursive=True)
    argv = launch_score_command(
        "--project", "koedu-project", "--region", "us-central1", "--bucket", gcs.BUCKET,
        "--tpu_type", "tpu-v5-lite-podslice", "--tpu_topology", "2x2",
        "--input", f"gs://{gcs.BUCKET}/crawl/*.jsonl", "--output", f"gs://{gcs.BUCKET}/out",
        "--model", f"gs://{gcs.BUCKET}/models/tiny", "--threshold", "3", "--", "--max_length", "64")
    job_file = tmp_path / "job.json"
    proc = run_pipeline(*argv, "--dry_run=True", f"--dataflow_job_file={job_file}", env=gcs.gcs_env(host))
    # Nothing ran: no output was written, and the model was never fetched for scoring.
    assert not fs.exists(f"{gcs.BUCKET}/out")
  job = json.loads(job_file.read_text())
  assert job["name"].startswith("koedu-score-") and job["type"] == "JOB_TYPE_BATCH"
  environment = job["environment"]
  assert environment["serviceOptions"] == ["worker_accelerator=type:tpu-v5-lite-podslice;topology:2x2"]
  assert "no_use_multiple_sdk_containers" in environment["experiments"]
  (pool,) = environment["workerPools"]
  assert pool["machineType"] == "ct5lp-hightpu-4t"
  assert ":v5litepod-4-" in pool["workerHarnessContainerImage"]
  assert pool["numThreadsPerWorker"] == 12
  # One SDK process per worker: a TPU can be opened by one process only.
  assert [c["useSingleCorePerContainer"] for c in pool["sdkHarnessContainerImages"]] == [True]
  options = environment["sdkPipelineOptions"]["options"]
  assert options["input"] == f"gs://{gcs.BUCKET}/crawl/*.jsonl"
  assert options["model"] == f"gs://{gcs.BUCKET}/models/tiny" and options["max_length"] == 64
  graph = json.loads((tmp_path / "job.json.pipeline.json").read_text())
  names = {t["uniqueName"] for t in graph["components"]["transforms"].values()}
  for step in ("MatchShards", "ListState", "Plan", "ScoreUnits", "WriteStats"):
    assert step in names, (step, sorted(names))
  assert_no_shuffle_carries_documents(graph)
  # Nothing that grows with the corpus in the graph: the globs, not the shards they match.
  assert "crawl/web-" not in json.dumps(graph)
  assert "error" not in proc.stderr.lower()


# Steps whose output is a descriptor: a glob's matches (source, size), a listed file name, a
# unit to score (source, size, unit), a unit's summary (counts), a shard's plan counts, and the
# constants the graph starts from. None holds a document: records are read inside ScoreUnits,
# by the worker that scores them.
DESCRIPTOR_STEPS = {"KeyShards", "ListState", "Plan", "ReadManifest", "SizeShards", "CountUnits",
                    "New", "Prior", "Shards", "Everything", "IfStatsNeeded", "ReadPrior",
                    "Globs", "Manifest", "Partitions"}


def assert_no_shuffle_carries_documents(graph: dict) -> None:
  transforms = {t["uniqueName"]: t for t in graph["components"]["transforms"].values()}
  producer = {}
  for t in transforms.values():
    if not t.get("subtransforms"):  # leaves produce what their composites pass on
      for pcoll in t.get("outputs", {}).values():
        producer[pcoll] = t["uniqueName"]

  def main_input(t):
    inputs = {k: v for k, v in t.get("inputs", {}).items() if not k.startswith("side")}
    return next(iter(inputs.values()), None)

  shuffles = [t for t in transforms.values() if t.get("spec", {}).get("urn") == "beam:transform:group_by_key:v1"]
  assert len(shuffles) >= 4, [t["uniqueName"] for t in shuffles]
  for shuffle in shuffles:
    # Walk back from the shuffle to the first step outside its own composite (or the root of
    # it): that step made what the shuffle carries.
    top, source = shuffle["uniqueName"].split("/")[0], shuffle["uniqueName"]
    while source.split("/")[0] == top:
      pcoll = main_input(transforms[source])
      if pcoll is None:  # a root: the composite creates its own elements
        break
      source = producer[pcoll]
    assert source.split("/")[0] in DESCRIPTOR_STEPS, (shuffle["uniqueName"], source)
