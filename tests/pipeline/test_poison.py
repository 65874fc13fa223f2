"""Poison records: one JSON line nested 100,000 deep and one 100 MB document in a run of small
ones. Neither stops the run nor sets its memory: the first goes to errors/, the second is scored
from its first max_length tokens, as transformers scores them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from tests.checkpoints import korean_sentences
from tests.model.reference import torch_classifier, torch_scores
from tests.pipeline.conftest import REPO, read_edu, read_errors, read_scores

BIG_BYTES = 100 * 10**6
GIB = 1 << 30


def test_a_deep_line_and_a_100_mb_document_in_one_run(make_checkpoint, tmp_path, tokenizer):
  model = make_checkpoint(max_position_embeddings=514, seed=7)
  words = " ".join(korean_sentences(400, seed=23, max_words=20)) + " "
  big_text = (words * (BIG_BYTES // len(words.encode()) + 1))
  small = korean_sentences(6, seed=29)
  shard = tmp_path / "poison.jsonl"
  with open(shard, "wb") as f:
    f.write(json.dumps({"id": "small-0", "text": small[0]}, ensure_ascii=False).encode() + b"\n")
    f.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    f.write(b'{"id": "big", "text": "' + big_text.encode() + b'"}\n')
    for i, text in enumerate(small[1:]):
      f.write(json.dumps({"id": f"small-{i + 1}", "text": text}, ensure_ascii=False).encode() + b"\n")
  assert os.path.getsize(shard) > BIG_BYTES
  output = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-m", "pipeline.run", "--input", str(shard), "--output", str(output),
                           "--model", model, "--max_length", "512", "--threshold", "0",
                           "--max_record_bytes", str(2 * BIG_BYTES)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  # wait4: this child's own peak RSS, not the maximum of every child so far.
  _, status, usage = os.wait4(proc.pid, 0)
  stderr = proc.stderr.read().decode()
  assert os.waitstatus_to_exitcode(status) == 0, stderr[-3000:]
  assert usage.ru_maxrss * 1024 < 4 * GIB, f"peak RSS {usage.ru_maxrss / 2**20:.2f} GiB"

  (deep,) = read_errors(str(output))
  assert (deep["row"], deep["reason"].split(":")[0]) == (1, "too_deep") and len(deep["raw"]) <= 10_000
  rows = {r["id"]: r for r in read_scores(str(output))}
  assert sorted(rows) == sorted(["big"] + [f"small-{i}" for i in range(6)])
  big = rows["big"]
  assert big["row"] == 2 and big["truncated"] and big["num_tokens"] == 512
  # transformers on the document's start: the same first 512 tokens as the whole would give.
  prefix = big_text[:20_000]
  enc = tokenizer(["passage: " + prefix], truncation=True, max_length=512, return_tensors="np")
  assert enc["input_ids"].shape[1] == 512
  expected = torch_scores(torch_classifier(model), enc["input_ids"])[0]
  assert np.isclose(big["score"], expected, atol=1e-4), (big["score"], expected)
  # edu/ keeps the whole record, every byte of its text.
  (kept_big,) = [r for r in read_edu(str(output)) if r["id"] == "big"]
  assert kept_big["text"] == big_text
