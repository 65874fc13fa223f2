"""What a resume may not mix into one output: two precisions, or two versions of a shard. Real
runs of `pipeline.run` (tests/pipeline/inject_faults.py: `--dtype auto` resolved as a TPU
would, and a crash before the first unit summary)."""
from __future__ import annotations

import glob
import json
import os

from tests.checkpoints import korean_sentences
from tests.pipeline.conftest import run_pipeline, snapshot
from tests.pipeline.test_faults import args_for, assert_exactly_once, markers, run_with_faults, write_corpus


def _state_files(output: str) -> list[dict]:
  files = glob.glob(os.path.join(output, "_done", "*", "*.json")) + glob.glob(os.path.join(output, "_units", "*", "*.json"))
  return [json.load(open(p)) for p in files]


def test_a_resume_at_another_resolved_precision_is_refused_by_name(spread_model, tmp_path):
  corpus, output = tmp_path / "in", str(tmp_path / "out")
  corpus.mkdir()
  expected = write_corpus(str(corpus))
  # --dtype auto, as _run.json records it; the output through faults.py's store, which can crash.
  args = args_for(str(corpus), f"faulty://{output}", spread_model)
  # Begun where auto means bf16 (a TPU), killed before any unit was summed up: chunk markers only.
  proc = run_with_faults({"auto_precision": "bfloat16", "kill_before": "/_units/"}, *args)
  assert proc.returncode == -9, proc.stderr[-2000:]
  begun = snapshot(output)
  assert markers(output) and {m["precision"] for m in _state_files(output)} == {"bfloat16"}

  # Resumed where auto means fp32 (a CPU worker): refused by name before a file is written,
  # nothing dead-lettered.
  proc = run_with_faults({}, *args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "the precision --dtype resolved to 'bfloat16' there, 'float32' now" in proc.stderr
  assert snapshot(output) == begun

  # On workers like the first ones it finishes, every record once, at one precision.
  proc = run_with_faults({"auto_precision": "bfloat16"}, *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert_exactly_once(output, expected)
  assert {m["precision"] for m in _state_files(output)} == {"bfloat16"}
  assert json.load(open(os.path.join(output, "stats.json")))["precision"] == "bfloat16"


def _rewrite_in_place(path: str, seed: int) -> None:
  """The shard exported again: the same name and number of lines, other texts."""
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  texts = korean_sentences(len(records), seed=seed, max_words=30)
  with open(path, "w", encoding="utf-8") as f:
    for record, text in zip(records, texts):
      if "text" in record:
        record["text"] = text
      f.write(json.dumps(record, ensure_ascii=False) + "\n")


def test_a_shard_rewritten_in_place_is_refused_by_name_finished_or_half_done(spread_model, tmp_path):
  corpus, output = tmp_path / "in", str(tmp_path / "out")
  corpus.mkdir()
  write_corpus(str(corpus))
  args = args_for(str(corpus), output, spread_model)
  shard = str(corpus / "part-1.jsonl")
  lines = sum(1 for _ in open(shard, encoding="utf-8"))
  run_pipeline(*args)
  finished = snapshot(output)
  then = {m["shard"] for m in _state_files(output) if m["source"] == shard}
  assert len(then) == 1 and then.pop().startswith(f"size {os.path.getsize(shard)}, mtime ")

  _rewrite_in_place(shard, seed=91)
  assert sum(1 for _ in open(shard, encoding="utf-8")) == lines
  proc = run_pipeline(*args, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert f"{shard} changed since it was scored into {output}" in proc.stderr
  assert f"now: size {os.path.getsize(shard)}, mtime {os.path.getmtime(shard)}" in proc.stderr
  assert snapshot(output) == finished, "a rerun over a changed shard wrote something"

  # Half done: chunks marked, no unit summed up yet; the planner reads one marker of the shard.
  half = str(tmp_path / "half")
  half_args = args_for(str(corpus), f"faulty://{half}", spread_model)
  proc = run_with_faults({"kill_before": "/_units/"}, *half_args)
  assert proc.returncode == -9, proc.stderr[-2000:]
  assert not glob.glob(os.path.join(half, "_units", "*", "*"))
  victim = sorted({m["source"] for m in _state_files(half)})[0]
  _rewrite_in_place(victim, seed=92)
  before = snapshot(half)
  proc = run_with_faults({}, *half_args)
  assert proc.returncode == 2 and f"{victim} changed since it was scored" in proc.stderr, proc.stderr[-3000:]
  assert snapshot(half) == before
