"""`python -m pipeline.run` end to end on the sample corpus, against transformers + PyTorch."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.checkpoints import SAMPLE_CORPUS, sample_corpus_records
from tests.pipeline.conftest import (MAX_LENGTH, THRESHOLD, read_edu, read_errors, read_scores, run_pipeline,
                                     score_sample_corpus, snapshot)

CORPUS = SAMPLE_CORPUS


def reference_scores(model_dir: str, texts: list[str]) -> tuple[np.ndarray, list[int], list[bool]]:
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer

  tok = AutoTokenizer.from_pretrained(model_dir)
  model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
  scores, lengths, truncated = [], [], []
  for text in texts:
    ids = tok("passage: " + text, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    full = tok("passage: " + text)["input_ids"]
    with torch.no_grad():
      scores.append(model(input_ids=torch.tensor([ids])).logits.item())
    lengths.append(len(ids))
    truncated.append(len(full) > MAX_LENGTH)
  return np.asarray(scores), lengths, truncated


def test_every_record_scored_once_and_matches_transformers(scored_corpus, spread_model):
  output, _ = scored_corpus
  records = sample_corpus_records()
  rows = read_scores(output)
  assert read_errors(output) == []
  assert sorted((r["source"], r["row"]) for r in rows) == sorted(records)
  rows.sort(key=lambda r: (r["source"], r["row"]))
  texts = [records[(r["source"], r["row"])]["text"] for r in rows]
  expected, lengths, truncated = reference_scores(spread_model, texts)
  got = np.asarray([r["score"] for r in rows])
  print(f"pipeline vs transformers: max |diff| = {np.abs(got - expected).max():.2e}")
  np.testing.assert_allclose(got, expected, atol=1e-4)
  assert [r["num_tokens"] for r in rows] == lengths
  assert [r["truncated"] for r in rows] == truncated
  assert any(truncated) and not all(truncated)
  assert [r["int_score"] for r in rows] == [int(round(max(0.0, min(s, 5.0)))) for s in got]
  assert len({r["int_score"] for r in rows}) >= 3, "the fixture should spread scores over classes"
  assert [r["id"] for r in rows] == [records[(r["source"], r["row"])]["id"] for r in rows]


def test_columns_and_types(scored_corpus):
  output, _ = scored_corpus
  import pyarrow as pa
  for name in os.listdir(os.path.join(output, "scores")):
    schema = pq.read_schema(os.path.join(output, "scores", name))
    assert schema.names == ["id", "source", "row", "score", "int_score", "num_tokens", "truncated"]
    assert schema.field("score").type == pa.float32()
    assert pa.types.is_integer(schema.field("int_score").type)
    assert schema.field("truncated").type == pa.bool_()


def test_edu_holds_exactly_the_kept_records_with_all_fields(scored_corpus):
  output, _ = scored_corpus
  records = sample_corpus_records()
  kept = {(r["source"], r["row"]): r for r in read_scores(output) if r["int_score"] >= THRESHOLD}
  edu = read_edu(output)
  assert 0 < len(edu) < len(records)
  assert sorted(r["id"] for r in edu) == sorted(r["id"] for r in kept.values())
  by_id = {r["id"]: r for r in records.values()}
  scores_by_id = {r["id"]: r for r in kept.values()}
  for row in edu:
    original = by_id[row["id"]]
    assert {k: row[k] for k in original} == original
    assert row["int_score"] == scores_by_id[row["id"]]["int_score"]
    assert row["score"] == pytest.approx(scores_by_id[row["id"]]["score"])


def test_stats_json(scored_corpus, spread_model):
  output, proc = scored_corpus
  with open(os.path.join(output, "stats.json")) as f:
    stats = json.load(f)
  rows = read_scores(output)
  assert stats["records_read"] == stats["scored"] == len(rows) == len(sample_corpus_records())
  assert stats["errored"] == 0
  assert stats["kept"] == sum(r["int_score"] >= THRESHOLD for r in rows)
  assert stats["tokens"] == sum(r["num_tokens"] for r in rows)
  assert stats["truncated"] == sum(r["truncated"] for r in rows)
  assert stats["int_score_histogram"] == {str(i): sum(r["int_score"] == i for r in rows) for i in range(6)}
  fine = stats["score_histogram"]
  assert sum(fine["counts"]) == len(rows) and len(fine["bin_edges"]) == len(fine["counts"]) + 1
  below = [e for e in fine["bin_edges"][1:] if e <= 2.5 + 1e-9]
  assert sum(fine["counts"][:len(below)]) == sum(r["score"] < 2.5 for r in rows)
  assert stats["model"] == spread_model and stats["weights_digest"].startswith("sha256:")
  assert stats["threshold"] == THRESHOLD
  assert stats["wall_time_seconds"] > 0 and stats["documents_per_second"] > 0
  assert "40 scored" in proc.stdout  # the summary printed at the end of a local run
  with open(os.path.join(output, "score_histogram.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_of_finished_run_changes_nothing(scored_corpus, spread_model):
  output, _ = scored_corpus
  before = snapshot(output)
  proc = score_sample_corpus(spread_model, output)  # the same settings as the run that made it
  assert snapshot(output) == before
  assert "was already complete" in proc.stdout and "40 scored" in proc.stdout


def test_an_input_that_matches_nothing_is_refused_by_name(scored_corpus, spread_model, tmp_path):
  # The workers match the globs: the job tells the launcher through a Beam counter, and the
  # launcher raises faults.NoInput (exit 2), whatever text the runner makes of a failure.
  nothing = str(tmp_path / "none-*.jsonl")
  settings = ["--model", spread_model, "--max_length", str(MAX_LENGTH), "--threshold", str(THRESHOLD),
              "--batch_size", "16"]
  proc = run_pipeline("--input", nothing, "--output", str(tmp_path / "out"), *settings, check=False)
  assert proc.returncode == 2 and f"error: the input matches no file: {nothing}" in proc.stderr
  assert not (tmp_path / "out" / "stats.json").exists()
  output, _ = scored_corpus  # a finished output: its stats.json is not replaced by an empty one
  before = snapshot(output)
  proc = run_pipeline("--input", nothing, "--output", output, *settings, check=False)
  assert proc.returncode == 2 and "the input matches no file" in proc.stderr
  assert snapshot(output) == before


def test_rerun_with_other_threshold_is_refused(scored_corpus, spread_model):
  output, _ = scored_corpus
  proc = run_pipeline("--input", os.path.join(CORPUS, "*"), "--output", output, "--model", spread_model,
                      "--max_length", str(MAX_LENGTH), "--threshold", "4", "--batch_size", "16", check=False)
  assert proc.returncode == 2
  assert "--threshold 3.0 there, 4.0 now" in proc.stderr and "rethreshold" in proc.stderr


@pytest.mark.parametrize("setting, value", [("batch_size", 7), ("dtype", "bfloat16"), ("max_length", 32),
                                            ("text_field", "body"), ("max_record_bytes", 4096),
                                            ("unit_bytes", 2 << 20)])
def test_rerun_changing_results_or_layout_is_refused_by_name(scored_corpus, spread_model, setting, value):
  from model import hub
  from pipeline import state
  from pipeline.options import ScoringConfig
  output, _ = scored_corpus
  same = dict(input="x", output=output, model=spread_model, max_length=MAX_LENGTH, threshold=THRESHOLD,
              batch_size=16)
  info = hub.describe(spread_model)
  state.check_or_write(ScoringConfig(**same), info, write=False)  # the same settings resume
  with pytest.raises(state.OutputMismatch, match=f"--{setting} {same.get(setting, ScoringConfig(**same).__dict__[setting])!r} there, {value!r} now"):
    state.check_or_write(ScoringConfig(**{**same, setting: value}), info, write=False)


def test_unreachable_default_model_fails_at_once_naming_model_path(tmp_path):
  import time
  start = time.monotonic()
  # A closed local port stands for a hub that cannot be reached.
  proc = run_pipeline("--input", f"{CORPUS}/*", "--output", str(tmp_path / "out"), check=False,
                      env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_XET": "1",
                           "HF_HOME": str(tmp_path / "hf")})
  assert proc.returncode == 2
  assert "--model PATH" in proc.stderr and "devngho/ko_edu_classifier_v2_nlpai-lab_KoE5" in proc.stderr
  assert time.monotonic() - start < 30
  assert not (tmp_path / "out").exists()


def test_mistyped_option_is_refused(tmp_path, spread_model):
  proc = run_pipeline("--input", f"{CORPUS}/*", "--output", str(tmp_path / "out"), "--model", spread_model,
                      "--treshold", "4", check=False)
  assert proc.returncode == 2 and "--treshold (did you mean --threshold?)" in proc.stderr
  assert not (tmp_path / "out").exists()


def test_a_tokenizer_larger_than_the_embeddings_fails_the_run_by_name(tmp_path, make_checkpoint, tokenizer):
  # Token ids past the embedding table would index out of it: refused before anything is scored.
  small = make_checkpoint(vocab_size=len(tokenizer) - 10)
  proc = run_pipeline("--input", f"{CORPUS}/*", "--output", str(tmp_path / "out"), "--model", small,
                      "--max_length", str(MAX_LENGTH), check=False)
  assert proc.returncode == 2  # the user's model, not the machine: a rerun would not help
  assert f"the tokenizer has {len(tokenizer)} tokens, the model {len(tokenizer) - 10} embeddings" in proc.stderr
  assert not list((tmp_path / "out").glob("_done/*")) and not list((tmp_path / "out").glob("errors/*"))
