"""A new threshold from scores/ and the shards, without the model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tests.checkpoints import SAMPLE_CORPUS
from tests.pipeline.conftest import MAX_LENGTH, REPO, read_edu, read_scores, run_pipeline


def rethreshold(output, threshold: str, *extra: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "pipeline.rethreshold", "--output", str(output),
                         "--threshold", threshold, *extra], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                        capture_output=True, text=True, timeout=300)


def test_rethreshold_matches_a_run_at_that_threshold(spread_model, tmp_path):
  corpus = tmp_path / "corpus"
  shutil.copytree(SAMPLE_CORPUS, corpus)
  common = ["--input", f"{corpus}/*", "--max_length", str(MAX_LENGTH), "--batch_size", "5"]
  run_pipeline(*common, "--output", str(tmp_path / "t3"), "--model", spread_model, "--threshold", "3")
  run_pipeline(*common, "--output", str(tmp_path / "t4"), "--model", spread_model, "--threshold", "4")

  # No model on hand: rethresholding must not need it.
  model_gone = tmp_path / "moved"
  shutil.move(spread_model, model_gone)
  try:
    proc = rethreshold(tmp_path / "t3", "4")
  finally:
    shutil.move(model_gone, spread_model)
  assert proc.returncode == 0, proc.stderr[-3000:]

  rebuilt = tmp_path / "t3" / "edu_t4"
  expected = read_edu(str(tmp_path / "t4"))
  got = []
  for name in sorted(os.listdir(rebuilt)):
    if name.endswith(".parquet"):
      import pyarrow.parquet as pq
      got += pq.read_table(rebuilt / name).to_pylist()
  assert sorted(got, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
  assert 0 < len(got) < len(read_edu(str(tmp_path / "t3")))
  stats = json.loads((rebuilt / "_stats.json").read_text())
  assert stats["kept"] == len(got) == sum(r["int_score"] >= 4 for r in read_scores(str(tmp_path / "t3")))
  assert f"{len(got)} records kept" in proc.stdout

  # A shard exported again since it was scored: its rows are not the ones scored any more.
  shard = sorted(corpus.iterdir())[0]
  os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
  proc = rethreshold(tmp_path / "t3", "2", "--edu_output", str(tmp_path / "t2"))
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert f"{shard} changed since it was scored" in proc.stderr
