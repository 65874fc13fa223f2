"""Reading labelled shards: every format, every bad row counted with its reason, the split."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from train import data
from train.config import TrainConfig
from train.prepare import split
from tests.train.conftest import write_jsonl


def test_bad_rows_are_counted_and_listed_never_dropped(tmp_path):
  path = write_jsonl(str(tmp_path / "a.jsonl"), [
      {"text": "좋은 글", "score": 3}, {"text": "높음", "score": 7.5}, {"text": "낮음", "score": -1},
      "not json", "[1, 2]", "", {"score": 2}, {"text": 5, "score": 2}, {"text": "  ", "score": 2},
      {"text": "라벨 없음"}, {"text": "문자열", "score": "3"}, {"text": "불", "score": True},
      '{"text": "무한", "score": NaN}', {"text": "끝", "score": 4.4}, '{"text": "\\ud800", "score": 1}',
      {"text": None, "score": 1}, {"text": "널", "score": None}])
  with open(path, "ab") as f:
    f.write(b'{"text": "\xff\xfe", "score": 1}\n')  # not UTF-8
  examples, report = data.read([path], "text", "score")
  # Scoring scores a blank text, so training keeps it: the head learns what it will be given.
  assert examples.texts == ["좋은 글", "  ", "끝"]
  np.testing.assert_allclose(examples.labels, [3, 2, 4.4], rtol=1e-6)
  assert report.rows == 18 and report.used == 3
  # Scoring's own reasons (pipeline/records.py) for the record, training's for the label.
  assert dict(report.bad) == {"label_out_of_range": 2, "invalid_json": 1, "not_an_object": 1,
                              "empty_line": 1, "missing_text": 1, "non_string_text": 1,
                              "missing_label": 2, "label_not_a_number": 2, "label_not_finite": 1,
                              "invalid_unicode": 1, "null_text": 1, "undecodable_bytes": 1}
  assert report.used + sum(report.bad.values()) == report.rows
  assert [r.row for r in report.bad_rows] == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17]
  assert json.loads(report.bad_rows[0].to_json()) == {
      "source": path, "row": 1, "reason": "label_out_of_range: 'score' is 7.5, outside 0-5",
      "raw": '{"text": "높음", "score": 7.5}'}
  assert report.bad_rows[2].reason.startswith("invalid_json: ")
  assert report.bad_rows[11].raw == '{"text": "\\ud800", "score": 1}'


def test_reads_the_annotation_steps_parquet_as_is(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  # train.annotate's annotations/: id, source, row, text, an int score, and the LLM's answer.
  rows = [{"id": f"s.jsonl:{i}", "source": "s.jsonl", "row": i, "text": f"문서 {i}", "score": i % 6,
           "answer": "Educational score: 3", "llm": "m", "prompt_sha256": "ab", "tokens_in": 10,
           "tokens_out": 3} for i in range(7)] + [
      {"id": "s.jsonl:7", "source": "s.jsonl", "row": 7, "text": "없음", "score": None, "answer": "?",
       "llm": "m", "prompt_sha256": "ab", "tokens_in": 10, "tokens_out": 3}]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet")
  examples, report = data.read([str(tmp_path / "*.parquet")], "text", "score")
  assert examples.texts == [f"문서 {i}" for i in range(7)]
  assert examples.labels.tolist() == [0, 1, 2, 3, 4, 5, 0]
  assert dict(report.bad) == {"missing_label": 1} and report.bad_rows[0].row == 7


def test_reads_gzip_zstd_and_parquet_and_reports_broken_shards(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  import zstandard
  records = [{"text": f"문서 {i}", "label": i % 6} for i in range(10)]
  lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
  (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
  (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
  pq.write_table(pa.Table.from_pylist(records), tmp_path / "c.parquet")
  (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(lines)[:-30])  # cut off mid-stream
  (tmp_path / "e.parquet").write_bytes(b"not parquet")
  examples, report = data.read([str(tmp_path / "*")], "text", "label")
  assert report.shards == 5
  assert examples.texts[:30] == [r["text"] for r in records] * 3
  reasons = [(r.source.rsplit("/", 1)[1], r.code) for r in report.bad_rows]
  assert reasons == [("d.jsonl.gz", "truncated_shard"), ("e.parquet", "unreadable_shard")]
  with pytest.raises(FileNotFoundError, match="no shard matches"):
    data.read([str(tmp_path / "missing-*.jsonl")], "text", "label")


def test_stratified_split_keeps_class_proportions_and_is_seeded():
  labels = np.repeat(np.arange(6, dtype=np.float32), [10, 100, 200, 150, 39, 1])
  train, held_out = data.stratified_split(labels, 0.1, seed=3)
  assert len(held_out) == 50 and len(train) == 450
  assert sorted(np.concatenate([train, held_out]).tolist()) == list(range(500))
  assert np.bincount(labels[held_out].astype(int), minlength=6).tolist()[:4] == [1, 10, 20, 15]
  again, _ = data.stratified_split(labels, 0.1, seed=3)
  other, _ = data.stratified_split(labels, 0.1, seed=4)
  assert np.array_equal(train, again) and not np.array_equal(train, other)
  assert len(data.stratified_split(labels, 64, seed=0)[1]) == 64
  with pytest.raises(ValueError):
    data.stratified_split(labels, 500, seed=0)


def test_eval_data_replaces_the_split(tmp_path):
  a = write_jsonl(str(tmp_path / "a.jsonl"), [{"text": "가", "score": 1}] * 5)
  b = write_jsonl(str(tmp_path / "b.jsonl"), [{"text": "나", "score": 4}] * 3 + ["oops"])
  train, held_out, report = split(TrainConfig(data=(a,), eval_data=(b,), output="-"))
  assert len(train.texts) == 5 and held_out.texts == ["나"] * 3
  assert report.rows == 9 and dict(report.bad) == {"invalid_json": 1}
