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
  for step in ("Read", "Score/BeamML_RunInference", "Write", "WriteStats"):
    assert step in names, (step, sorted(names))
  assert "error" not in proc.stderr.lower()
