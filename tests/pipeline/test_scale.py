"""Bookkeeping that does not grow with the corpus: a run over 2,000 shards and its rerun,
every filesystem call counted (tests/pipeline/inject_faults.py's counting store); and the first
outputs written while most shards are unread."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.pipeline.conftest import REPO

SHARDS = 2000
STATE_LISTINGS = 32  # 16 partitions of _done/ and of _units/


def run_counted(tmp_path, name: str, spread_model: str) -> dict:
  counts = tmp_path / f"{name}.json"
  output = f"{tmp_path}/out"
  faults = {"count_to": str(counts), "output": output}
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", KOEDU_FAULTS=json.dumps(faults))
  proc = subprocess.run([sys.executable, "-m", "tests.pipeline.inject_faults", "--input", f"faulty://{tmp_path}/in/*.jsonl",
                         "--output", f"faulty://{output}", "--model", spread_model, "--max_length", "32",
                         "--batch_size", "8"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(counts.read_text())


def total(ops: dict, kind: str) -> int:
  return sum(n for key, n in ops.items() if key.split()[0] == kind)


def test_launch_resume_and_stats_cost_no_call_per_shard(spread_model, tmp_path):
  (tmp_path / "in").mkdir()
  for s in range(SHARDS):
    (tmp_path / "in" / f"s{s:05d}.jsonl").write_text(json.dumps({"id": s, "text": f"광합성 문서 {s}"}) + "\n")

  first = run_counted(tmp_path, "first", spread_model)
  # The launcher: the run's settings and whether stats.json exists; no glob, no shard.
  assert total(first["launch"], "list") == 0 and sum(first["launch"].values()) <= 6, first["launch"]
  ops = first["run"]
  # Matching is one listing on a worker; the state of the output 32, whatever its size.
  assert ops["list input"] == 1 and total(ops, "list") == 1 + STATE_LISTINGS, ops
  # Per shard: it is read once and each output written once; nothing reads a marker back.
  assert ops["open input"] == SHARDS
  for area in ("scores", "edu", "_done", "_units"):
    assert ops[f"write {area}"] == SHARDS, (area, ops)
  assert not any(key.startswith("read _") for key in ops), "stats read markers or summaries back"
  # Reading, scoring and writing are fused per unit: the first chunk is done while most shards
  # are still unread (a shuffle of documents would read all 2,000 first).
  opened = first["before_first"]["write _done"].get("open input", 0)
  assert opened < SHARDS // 10, f"{opened} shards read before the first chunk was written"

  rerun = run_counted(tmp_path, "rerun", spread_model)
  ops = rerun["run"]
  assert total(ops, "list") == 1 + STATE_LISTINGS and sum(ops.values()) < 50, ops
  assert total(ops, "open") == total(ops, "write") == total(ops, "delete") == 0, ops
  stats = json.loads((tmp_path / "out" / "stats.json").read_text())
  assert stats["scored"] == SHARDS and stats["shards"] == {"matched": SHARDS, "this_run": SHARDS}
