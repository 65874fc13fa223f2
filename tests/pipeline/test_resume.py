"""Production behaviour: a killed run finishes on the rerun without redoing or duplicating work,
and multi-process workers give the same scores."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.checkpoints import korean_sentences
from tests.pipeline.conftest import MAX_LENGTH, REPO, read_errors, read_scores, run_pipeline

SHARDS, RECORDS, CHUNK = 12, 60, 4  # 180 chunks: slow enough to kill in the middle


def write_corpus(root) -> dict:
  records = {}
  texts = korean_sentences(SHARDS * RECORDS, seed=11, max_words=60)
  for s in range(SHARDS):
    path = os.path.join(root, f"crawl-{s:03d}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      for r in range(RECORDS):
        record = {"id": f"{s}-{r}", "text": texts[s * RECORDS + r]}
        if r == 7:
          record = {"id": f"{s}-{r}"}  # an error per shard, so errors/ is resumed too
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        records[(path, r)] = record
  return records


def markers(output) -> dict[str, bytes]:
  """Every chunk's done-marker (spread over _done/<partition>/), by file name."""
  out = {}
  for path in glob.glob(os.path.join(output, "_done", "*", "*.json")):
    with open(path, "rb") as f:
      out[os.path.basename(path)] = f.read()
  return out


def test_killed_run_resumes_exactly_once(spread_model, tmp_path):
  corpus, output = tmp_path / "in", tmp_path / "out"
  corpus.mkdir()
  records = write_corpus(str(corpus))
  args = ["--input", str(corpus / "*.jsonl"), "--output", str(output), "--model", spread_model,
          "--max_length", str(MAX_LENGTH), "--batch_size", str(CHUNK)]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-m", "pipeline.run", *args], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
  total = SHARDS * RECORDS // CHUNK
  deadline = time.monotonic() + 240
  while len(markers(output)) < total // 4:
    assert proc.poll() is None, "the run ended before it could be killed"
    assert time.monotonic() < deadline
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)  # a crash: no cleanup, no stats
  proc.wait()
  first = markers(output)
  assert 0 < len(first) < total, "the kill should land mid-run"
  assert not (output / "stats.json").exists()

  run_pipeline(*args)
  after = markers(output)
  assert len(after) == total
  assert {k: after[k] for k in first} == first, "chunks done before the kill were redone"

  rows, errors = read_scores(str(output)), read_errors(str(output))
  keys = [(r["source"], r["row"]) for r in rows] + [(e["source"], e["row"]) for e in errors]
  assert len(keys) == len(set(keys)) == len(records)
  assert set(keys) == set(records)
  assert {e["reason"].split(":")[0] for e in errors} == {"missing_text"}
  stats = json.loads((output / "stats.json").read_text())
  assert stats["records_read"] == len(records) and stats["scored"] == len(rows)
  assert stats["scored_this_run"] == len(rows) - sum(json.loads(m)["scored"] for m in first.values())

  # Same scores as a run that was never interrupted.
  clean = tmp_path / "clean"
  run_pipeline(*args[:2], "--output", str(clean), *args[4:])
  expected = {(r["source"], r["row"]): r["score"] for r in read_scores(str(clean))}
  assert {(r["source"], r["row"]): r["score"] for r in rows} == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("share", [False, True], ids=["per-process-model", "shared-model"])
def test_multi_processing_workers_give_the_same_scores(spread_model, tmp_path, share):
  corpus = tmp_path / "in"
  corpus.mkdir()
  records = write_corpus(str(corpus))
  base = ["--input", str(corpus / "crawl-00[0-3].jsonl"), "--model", spread_model,
          "--max_length", str(MAX_LENGTH), "--batch_size", "16"]
  run_pipeline(*base, "--output", str(tmp_path / "single"))
  extra = ["--share_model_across_processes"] if share else []
  run_pipeline(*base, "--output", str(tmp_path / "multi"), "--direct_running_mode", "multi_processing",
               "--direct_num_workers", "2", *extra)
  single = {(r["source"], r["row"]): r["score"] for r in read_scores(str(tmp_path / "single"))}
  multi = {(r["source"], r["row"]): r["score"] for r in read_scores(str(tmp_path / "multi"))}
  assert {e["reason"].split(":")[0] for e in read_errors(str(tmp_path / "multi"))} == {"missing_text"}
  assert len(multi) == 4 * (RECORDS - 1)
  assert multi == pytest.approx(single, abs=1e-6)
  del records
