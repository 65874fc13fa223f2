"""The whole pipeline against a real GCS server process: input, output and model on gs://."""
from __future__ import annotations

import json

import fsspec
import pyarrow.parquet as pq
import pytest

from tests import gcs
from tests.checkpoints import SAMPLE_CORPUS
from tests.pipeline.conftest import MAX_LENGTH, read_scores, run_compare, run_pipeline


@pytest.fixture(scope="module")
def gcs_host():
  with gcs.emulator() as host:
    yield host


def _gcs_fs():
  fs = fsspec.filesystem("gs", use_listings_cache=False)
  return fs


def test_score_from_and_to_gcs_matches_local(gcs_host, spread_model, tmp_path):
  fs = _gcs_fs()
  fs.put(SAMPLE_CORPUS + "/", f"{gcs.BUCKET}/crawl/", recursive=True)
  fs.put(spread_model + "/", f"{gcs.BUCKET}/models/tiny/", recursive=True)
  bucket = f"gs://{gcs.BUCKET}"
  args = ["--input", f"{bucket}/crawl/*.jsonl,{bucket}/crawl/*.gz,{bucket}/crawl/*.parquet",
          "--output", f"{bucket}/out", "--model", f"{bucket}/models/tiny",
          "--max_length", str(MAX_LENGTH), "--model_cache_dir", str(tmp_path / "cache")]
  env = gcs.gcs_env(gcs_host)
  run_pipeline(*args, env=env)

  local = tmp_path / "local"
  run_pipeline("--input", f"{SAMPLE_CORPUS}/*", "--output", str(local), "--model", spread_model,
               "--max_length", str(MAX_LENGTH))
  expected = {(r["source"].rsplit("/", 1)[1], r["row"]): r["score"] for r in read_scores(str(local))}

  got = {}
  for path in fs.glob(f"{gcs.BUCKET}/out/scores/*.parquet"):
    with fs.open(path, "rb") as f:
      for r in pq.read_table(f).to_pylist():
        assert r["source"].startswith(f"{bucket}/crawl/")
        got[(r["source"].rsplit("/", 1)[1], r["row"])] = r["score"]
  assert got == pytest.approx(expected, abs=1e-6)
  stats = json.loads(fs.cat(f"{gcs.BUCKET}/out/stats.json"))
  assert stats["scored"] == len(expected) and stats["model"] == f"{bucket}/models/tiny"
  assert fs.exists(f"{gcs.BUCKET}/out/score_histogram.png")
  assert fs.glob(f"{gcs.BUCKET}/out/edu/*.parquet")
  assert not [p for p in fs.find(f"{gcs.BUCKET}/out") if ".partial-" in p]  # no renames on GCS

  # A rerun of the finished run changes no object.
  before = {p: fs.info(p)["generation"] for p in fs.find(f"{gcs.BUCKET}/out")}
  run_pipeline(*args, env=env)
  assert {p: fs.info(p)["generation"] for p in fs.find(f"{gcs.BUCKET}/out")} == before

  # pipeline.compare reads scores/ and writes its figures on gs:// too.
  proc = run_compare(f"{bucket}/out", f"{bucket}/out", "--json", f"{bucket}/compare.json", env=env)
  assert proc.returncode == 0, proc.stderr
  figures = json.loads(fs.cat(f"{gcs.BUCKET}/compare.json"))
  assert figures["documents"] == len(expected) and figures["agreement"] == 1.0
