"""Faults injected into the real code path (tests/pipeline/inject_faults.py drives
`pipeline.run`): a device that fails, a flaky store, a crash between a chunk's files. Whatever happens, a rerun
leaves every record exactly once in scores/ or errors/, and a machine fault never puts a
record in errors/."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from tests.checkpoints import korean_sentences
from tests.pipeline.conftest import MAX_LENGTH, REPO, read_edu, read_errors, read_scores

CHUNK, THRESHOLD = 5, 1.0


def write_corpus(root: str, shards: int = 3, records: int = 12) -> dict:
  """JSON-lines shards with one record per shard that has no text (the only errors/ expected)."""
  texts = korean_sentences(shards * records, seed=19, max_words=30)
  expected = {}
  for s in range(shards):
    path = os.path.join(root, f"part-{s}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      for r in range(records):
        record = {"id": f"{s}-{r}", "text": texts[s * records + r]} if r != 3 else {"id": f"{s}-{r}"}
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        expected[(path, r)] = record
  return expected


def run_with_faults(faults: dict, *args: str) -> subprocess.CompletedProcess:
  # Retries wait 0.05 s then double (0.5 s in a real run): the same path, less idle time.
  faults = {"backoff_seconds": 0.05, **faults}
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", KOEDU_FAULTS=json.dumps(faults))
  return subprocess.run([sys.executable, "-m", "tests.pipeline.inject_faults", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def args_for(corpus: str, output: str, model: str, *extra: str) -> list[str]:
  return ["--input", os.path.join(corpus, "*.jsonl"), "--output", output, "--model", model,
          "--max_length", str(MAX_LENGTH), "--batch_size", str(CHUNK), "--threshold", str(THRESHOLD),
          "--device_retries", "3", *extra]


def markers(output: str) -> list[str]:
  return sorted(os.path.basename(p) for p in glob.glob(os.path.join(output.replace("faulty://", ""), "_done", "*", "*.json")))


def assert_exactly_once(output: str, expected: dict) -> None:
  output = output.replace("faulty://", "")
  rows, errors = read_scores(output), read_errors(output)
  keys = [(r["source"].replace("faulty://", ""), r["row"]) for r in rows]
  keys += [(e["source"].replace("faulty://", ""), e["row"]) for e in errors]
  assert len(keys) == len(set(keys)) == len(expected), "a record is missing or written twice"
  assert set(keys) == set(expected)
  # Only what lies in the records: the missing texts, never a machine fault.
  assert {e["reason"].split(":")[0] for e in errors} == {"missing_text"}
  assert sorted(r["id"] for r in read_edu(output)) == sorted(r["id"] for r in rows if r["int_score"] >= THRESHOLD)
  stats = json.load(open(os.path.join(output, "stats.json")))
  assert (stats["scored"], stats["errored"]) == (len(rows), len(errors))


def test_device_faults_fail_the_run_or_are_retried_never_dead_lettered(spread_model, tmp_path):
  expected = write_corpus(str(tmp_path))
  output = str(tmp_path / "out")
  args = args_for(str(tmp_path), output, spread_model)
  # A device that never works: the run fails naming the error, and leaves no trace of it.
  proc = run_with_faults({"device_failures": -1}, *args)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "INTERNAL: injected: TPU halted" in proc.stderr and "rerun" in proc.stderr
  assert markers(output) == [] and not glob.glob(os.path.join(output, "errors", "*"))
  # The rerun meets a device that halts mid-run for two calls and recovers (the batches are
  # retried, with the probe when a retry fails too): every record is scored in this one run,
  # none dead-lettered.
  proc = run_with_faults({"device_failures": 2, "device_fail_after": 3}, *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count("INTERNAL: injected") >= 2
  assert_exactly_once(output, expected)


def test_flaky_storage_loses_and_duplicates_nothing(spread_model, tmp_path):
  corpus = tmp_path / "in"
  corpus.mkdir()
  expected = write_corpus(str(corpus))
  output = f"faulty://{tmp_path}/out"
  proc = run_with_faults({"fs_every": 4}, *args_for(f"faulty://{corpus}", output, spread_model))
  assert proc.returncode == 0, proc.stderr[-3000:]
  injected = proc.stderr.count("injected:")
  assert injected >= 20, "the store hardly failed; the test proves little"
  assert_exactly_once(output, {(f"{corpus}/{os.path.basename(p)}", r): v for (p, r), v in expected.items()})


def test_a_crash_at_each_phase_of_a_chunk_write_then_reruns_exactly_once(spread_model, tmp_path):
  corpus, output = tmp_path / "in", f"faulty://{tmp_path}/out"
  corpus.mkdir()
  expected = write_corpus(str(corpus))
  args = args_for(str(corpus), output, spread_model)
  output = output[len("faulty://"):]
  # Each chunk writes scores, edu, errors (its record without text), then its marker: the
  # kill comes as the process is about to write one of them (the store is not otherwise flaky).
  for phase, n in [("/edu/", 2), ("/errors/", 1), ("/_done/", 1)]:
    before = markers(output)
    proc = run_with_faults({"kill_before": phase, "kill_on": n}, *args)
    assert proc.returncode == -9, (phase, proc.stderr[-2000:])
    written = {os.path.basename(p)[:-len(".parquet")] for p in glob.glob(os.path.join(output, "scores", "*"))}
    done = {m[:-len(".json")] for m in markers(output)}
    assert done < written, f"killed {phase}: a chunk has its scores and no marker yet"
    assert set(before) <= set(markers(output))
    if phase == "/edu/":
      # Another chunk layout on the interrupted output is refused, naming both values.
      refused = run_with_faults({}, *[a if a != str(CHUNK) else "7" for a in args])
      assert refused.returncode == 2 and "--batch_size 5 there, 7 now" in refused.stderr
  proc = run_with_faults({}, *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert_exactly_once(output, expected)
