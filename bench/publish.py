"""`python -m pipeline.publish` on the DirectRunner, timed as a whole process, at two sizes.

    python -m bench.publish [--documents 60000] [--rows_per_chunk 1200]

Builds a scoring run's outputs without the model: edu/ chunk files written by the scoring run's
own writer (outputs.edu_bytes) from the benchmark documents with a URL and a nested `meta`,
unit summaries with their chunks' edu entries, _run.json and stats.json. Then publishes the
whole run and a quarter of it, each in a fresh process into a new DEST. The difference between
the two is the marginal cost (Beam's start and the fixed steps cancel out): edu bytes read and
dataset bytes written per CPU-second of the process, which is what a Dataflow vCPU sustains
(each file is read, conformed and written by one thread).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

from bench import common


def build_run(path: str, documents: int, rows_per_chunk: int, chunks_per_shard: int = 8) -> int:
  """A finished run's outputs with `documents` kept records; returns the edu bytes."""
  from pipeline import io, outputs, shards, state
  shutil.rmtree(path, ignore_errors=True)
  texts = common.documents(documents)
  rng = np.random.default_rng(0)
  scores = rng.uniform(2.5, 5.5, documents).astype(np.float32)
  int_scores = np.clip(np.rint(scores), 0, 5).astype(np.int64)
  total, chunk_count, row = 0, 0, 0
  shard = 0
  while row < documents:
    source = f"gs://bench-crawl/shard-{shard:05d}.jsonl.zst"
    edu = []
    for index in range(chunks_per_shard):
      end = min(row + rows_per_chunk, documents)
      if row >= end:
        break
      records = [{"id": f"{shard}-{index}-{i}", "text": texts[i], "url": f"https://example.kr/{i}",
                  "meta": {"lang": "ko", "crawl": "2026-10", "length": len(texts[i])}} for i in range(row, end)]
      data = outputs.edu_bytes(records, scores[row:end], int_scores[row:end])
      io.write_bytes_atomic(state.output_path(path, state.EDU, source, index), data)
      edu.append({"chunk": index, **outputs.edu_entry(data)})
      total += len(data)
      chunk_count += 1
      row = end
    totals = {**outputs.empty_totals(), "chunks": len(edu)}
    unit = shards.Unit(source, 0, 0, 1, identity="size 0")
    state.write_summary(path, unit, totals, totals, "float32", **outputs.edu_fields(edu))
    shard += 1
  histogram = {str(i): int((int_scores == i).sum()) for i in range(6)}
  with open(os.path.join(path, "_run.json"), "w") as f:
    json.dump({"threshold": 3.0, "max_record_bytes": 16 << 20}, f)
  with open(os.path.join(path, "stats.json"), "w") as f:
    json.dump({"threshold": 3.0, "int_score_histogram": histogram, "records_read": documents,
               "scored": documents, "errored": 0, "kept": documents, "model": "bench",
               "model_revision": None, "weights_digest": "sha256:bench"}, f)
  return total


def publish(run: str, dest: str) -> dict:
  shutil.rmtree(dest, ignore_errors=True)
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  started = time.perf_counter()
  subprocess.run([sys.executable, "-m", "pipeline.publish", "--output", run, "--dataset", dest],
                 check=True, cwd=common.REPO, env={**os.environ, "PYTHONPATH": common.REPO})
  wall = time.perf_counter() - started
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  report = json.load(open(os.path.join(dest, ".koedu", "publish.json")))
  # No peak RSS here: a child's ru_maxrss counts this process's pages it shared when forked.
  return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rows": report["rows"],
          "files": report["files"], "dataset_bytes": report["bytes"]}


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--documents", type=int, default=60000)
  parser.add_argument("--rows_per_chunk", type=int, default=1200)
  args = parser.parse_args()
  root = os.path.join(common.BENCH_DIR, "publish")
  results = {}
  for label, n in (("quarter", args.documents // 4), ("whole", args.documents)):
    run = os.path.join(root, f"run-{n}")
    edu = build_run(run, n, args.rows_per_chunk)
    result = publish(run, os.path.join(root, f"dest-{n}"))
    result.update(documents=n, edu_bytes=edu, others_busy=round(common.others_busy(1.0), 3))
    results[label] = result
    common.log(f"{label}: {result}")
  q, w = results["quarter"], results["whole"]
  cpu = w["cpu_s"] - q["cpu_s"]
  results["marginal"] = {
      "edu_mb_per_cpu_s": round((w["edu_bytes"] - q["edu_bytes"]) / 1e6 / cpu, 2),
      "dataset_mb_per_cpu_s": round((w["dataset_bytes"] - q["dataset_bytes"]) / 1e6 / cpu, 2),
      "rows_per_cpu_s": round((w["rows"] - q["rows"]) / cpu),
      "edu_bytes_per_row": round(w["edu_bytes"] / w["rows"]),
      "dataset_bytes_per_row": round(w["dataset_bytes"] / w["rows"])}
  results["command"] = common.command_line()
  results["machine"] = common.machine()
  common.save_results("publish", results)
  print(json.dumps(results, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
