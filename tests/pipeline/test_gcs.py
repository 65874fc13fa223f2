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
  # The crawl as a manifest lists it: its shards, a comment, a blank line, and a shard that is
  # not there (one errors/ record for it, row null).
  shards = sorted(f"gs://{p}" for p in fs.ls(f"{gcs.BUCKET}/crawl"))
  fs.pipe(f"{gcs.BUCKET}/crawl.txt", "\n".join(["# crawl 2025-01-01", *shards, "",
                                                f"{bucket}/crawl/gone.jsonl"]).encode())
  args = ["--input_manifest", f"{bucket}/crawl.txt",
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
  assert stats["shards"]["matched"] == len(shards) + 1 and stats["errors_by_reason"] == {"unreadable_shard": 1}
  (gone,) = [json.loads(line) for p in fs.glob(f"{gcs.BUCKET}/out/errors/*") for line in fs.cat(p).splitlines()]
  assert (gone["source"], gone["row"]) == (f"{bucket}/crawl/gone.jsonl", None)
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


def test_a_model_changed_in_place_on_gcs_is_fetched_again_or_refused(gcs_host, make_checkpoint, tmp_path):
  """Workers cache gs:// models by the checksums the launcher pinned: new weights under the same
  URL are a new model (fetched again, scored with), and weights that change after the launcher
  pinned them stop the run rather than score with a mix."""
  import numpy as np

  from model import hub
  from model.runner import RunnerConfig, load_runner
  from model.tokenize import DocumentTokenizer
  from tests.model.reference import mixed_texts
  fs = _gcs_fs()
  url, cache = f"gs://{gcs.BUCKET}/models/changing", str(tmp_path / "cache")
  first, second = make_checkpoint(seed=11), make_checkpoint(seed=12)

  def scores(model_dir):
    ids = DocumentTokenizer(model_dir, 40)(mixed_texts(seed=2)).ids
    return load_runner(model_dir, RunnerConfig(max_length=40, row_lengths=(20,), tokens_per_device=40)).run(ids)

  fs.put(first + "/", f"{gcs.BUCKET}/models/changing/", recursive=True)
  old = hub.describe(url)
  old_dir = hub.fetch(old, cache_dir=cache)
  np.testing.assert_array_equal(scores(old_dir), scores(first))
  fs.put(second + "/model.safetensors", f"{gcs.BUCKET}/models/changing/model.safetensors")  # in place
  new = hub.describe(url)
  assert new.digest != old.digest
  new_dir = hub.fetch(new, cache_dir=cache)
  assert new_dir != old_dir
  np.testing.assert_array_equal(scores(new_dir), scores(second))
  # A worker that starts after the change, holding what the launcher pinned before it.
  with pytest.raises(hub.ModelChanged, match="model.safetensors has changed since the run started"):
    hub.fetch(old, cache_dir=str(tmp_path / "another-worker"))


def test_a_shard_rewritten_in_place_on_gcs_is_another_shard(gcs_host):
  """GCS names each version of an object by its generation: a shard written again with as many
  bytes has another identity, the same whether a glob finds it or a manifest's lookup does."""
  from pipeline.state import plan
  fs = _gcs_fs()
  url = f"gs://{gcs.BUCKET}/rewritten/part-0.jsonl"
  fs.pipe(url[len("gs://"):], b'{"text": "one"}\n')
  (matched,) = plan.MatchShards().process(f"gs://{gcs.BUCKET}/rewritten/*.jsonl")
  assert matched == next(plan.LookUpShard().process(url))
  assert matched[:2] == (url, 16) and matched[2].startswith("size 16, generation ")
  fs.pipe(url[len("gs://"):], b'{"text": "two"}\n')
  (again,) = plan.MatchShards().process(url)
  assert again[:2] == (url, 16) and again[2] != matched[2]
  assert again == next(plan.LookUpShard().process(url))
