"""Bad input never crashes a run and never vanishes: every record is in scores/ or errors/,
exactly once, with the reason it could not be scored."""
from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from tests.pipeline.conftest import MAX_LENGTH, read_edu, read_errors, read_scores, run_pipeline

GOOD = "광합성은 식물이 빛 에너지를 화학 에너지로 바꾸는 과정이다."


def line(obj) -> bytes:
  return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def write_messy_corpus(root: str) -> tuple[dict, dict, set]:
  """Writes shards; returns (expected scored rows, expected error rows -> reason code, failed shards)."""
  scored, errors, failed_shards = {}, {}, set()

  def expect(path, rows):
    for row, outcome in enumerate(rows):
      if outcome == "ok":
        scored[(path, row)] = True
      else:
        errors[(path, row)] = outcome

  path = os.path.join(root, "mixed.jsonl")
  lines = [
      (line({"id": "a", "text": GOOD}), "ok"),
      (b'{"id": "b", "text": "unterminated\n', "invalid_json"),
      (line([1, 2, 3]), "not_an_object"),
      (line("just a string"), "not_an_object"),
      (line({"id": "c"}), "missing_text"),
      (line({"id": "d", "text": None}), "null_text"),
      (line({"id": "e", "text": 42}), "non_string_text"),
      (b'{"id": "f", "text": "\xff\xfe broken"}\n', "undecodable_bytes"),
      (b"   \n", "empty_line"),
      (line({"text": GOOD + " 아이디 없음"}), "ok"),  # no id: "<source>:<row>"
      (line({"id": 7, "text": "", "extra": {"nested": [1, 2]}}), "ok"),  # empty text is still a document
      (line({"id": "g", "text": GOOD * 40}), "ok"),  # longer than max_length
      (b'{"id": "h", "text": "half an emoji \\ud83d here"}\n', "invalid_unicode"),  # lone surrogate
      (b'{"id": "i", "text": "a whole one \\ud83d\\ude00 here"}\n', "ok"),
  ]
  with open(path, "wb") as f:
    f.write(b"".join(l for l, _ in lines))
  expect(path, [o for _, o in lines])

  path = os.path.join(root, "cut.jsonl.gz")  # a download that broke off
  whole = gzip.compress(b"".join(line({"id": f"cut{i}", "text": GOOD * 5 + str(i)}) for i in range(400)))
  with open(path, "wb") as f:
    f.write(whole[: len(whole) // 2])
  with gzip.open(path, "rb") as f:
    readable = 0
    try:
      for _ in f:
        readable += 1
    except EOFError:
      pass
  expect(path, ["ok"] * readable + ["truncated_shard"])

  path = os.path.join(root, "fine.jsonl.zst")
  with open(path, "wb") as f:
    f.write(zstandard.ZstdCompressor().compress(line({"id": "z1", "text": GOOD}) + line({"id": "z2", "text": "뉴스"})))
  expect(path, ["ok", "ok"])

  path = os.path.join(root, "table.parquet")
  pq.write_table(pa.table({"id": ["p1", "p2", "p3"], "text": [GOOD, None, "짧은 글"],
                           "score": [9.0, 9.0, 9.0]}), path)
  expect(path, ["ok", "null_text", "ok"])

  path = os.path.join(root, "garbage.parquet")
  with open(path, "wb") as f:
    f.write(b"this is not parquet at all")
  failed_shards.add((path, "unreadable_shard"))

  path = os.path.join(root, "notes.txt")
  with open(path, "w") as f:
    f.write("not a shard format\n")
  failed_shards.add((path, "unsupported_format"))

  open(os.path.join(root, "empty.jsonl"), "w").close()  # no records: nothing to account for
  return scored, errors, failed_shards


def test_every_record_accounted_for_exactly_once(spread_model, tmp_path):
  corpus, output = tmp_path / "in", tmp_path / "out"
  corpus.mkdir()
  expected_scored, expected_errors, failed_shards = write_messy_corpus(str(corpus))
  proc = run_pipeline("--input", str(corpus / "*"), "--output", str(output), "--model", spread_model,
                      "--max_length", str(MAX_LENGTH), "--threshold", "0", "--batch_size", "8")

  rows = read_scores(str(output))
  errors = read_errors(str(output))
  scored_keys = [(r["source"], r["row"]) for r in rows]
  error_keys = [(e["source"], e["row"]) for e in errors if e["row"] is not None]
  assert len(scored_keys) == len(set(scored_keys)) and len(error_keys) == len(set(error_keys))
  assert not set(scored_keys) & set(error_keys)
  assert set(scored_keys) == set(expected_scored)
  assert {k: e["reason"].split(":")[0] for k, e in zip(error_keys, [e for e in errors if e["row"] is not None])} \
      == expected_errors
  assert {(e["source"], e["reason"].split(":")[0]) for e in errors if e["row"] is None} == failed_shards
  for e in errors:
    assert set(e) == {"source", "row", "reason", "raw"} and len(e["raw"]) <= 10_000
  raw = {(e["source"], e["row"]): e["raw"] for e in errors}
  assert '"id": "c"' in raw[(str(corpus / "mixed.jsonl"), 4)]

  ids = {(r["source"], r["row"]): r["id"] for r in rows}
  mixed = str(corpus / "mixed.jsonl")
  assert ids[(mixed, 0)] == "a" and ids[(mixed, 10)] == "7"
  assert ids[(mixed, 9)] == f"{mixed}:9"
  assert {r["truncated"] for r in rows if r["source"] == mixed and r["row"] == 11} == {True}

  # threshold 0 keeps every scored record; the Parquet shard's own "score" column yields to ours.
  edu = read_edu(str(output))
  assert len(edu) == len(rows)
  p1 = next(r for r in edu if r.get("id") == "p1")
  assert p1["score"] != 9.0 and 0 <= p1["int_score"] <= 5

  with open(output / "stats.json") as f:
    stats = json.load(f)
  assert stats["scored"] == len(expected_scored)
  assert stats["records_read"] == len(expected_scored) + len(expected_errors)
  assert stats["errored"] == len(expected_errors) + len(failed_shards)
  assert stats["errors_by_reason"]["invalid_json"] == 1
  assert stats["errors_by_reason"]["unreadable_shard"] == 1
  assert "errors invalid_json: 1" in proc.stdout
  # Beam's own counters agree with the files.
  metrics = dict(kv.split("=") for kv in proc.stderr.split("beam metrics: ")[1].splitlines()[0].split(", "))
  assert int(metrics["records_scored"]) == stats["scored"]
  assert int(metrics["records_read"]) == stats["records_read"]
  assert int(metrics["records_errored"]) == stats["errored"]
  assert int(metrics["records_kept"]) == stats["kept"]
  assert int(metrics["tokens"]) == stats["tokens"] and int(metrics["truncated"]) == stats["truncated"]
