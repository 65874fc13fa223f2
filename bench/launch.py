"""What a run costs before any document is scored, for 2,000 and 20,000 shards, before and after
discovery and resume moved onto the workers.

    python -m bench.launch [--shards 2000,20000] [--before COMMIT]

launch: the Dataflow job as `launch.sh score` submits it, built offline (`--dry_run`, against
  gcp-storage-emulator's server, run in this process): seconds from exec to exit, filesystem calls, and
  the size of the job's graph (Dataflow refuses graphs over about 10 MB).
resume: a rerun into an output whose every shard is done (its state files written here, as a
  finished run leaves them): the old code decides on the launcher, the new on the workers
  (DirectRunner), so both are the whole process.
Local shards, counted through a `counted://` filesystem that wraps the local one; "before" is
a git worktree of --before (default 9d75996, the last commit before this work).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time

from bench import common

BEFORE = "9d75996"
BUCKET = "koedu-bench"


@contextlib.contextmanager
def gcs_emulator():
  """gcp-storage-emulator's server on a free local port, in this process (the runs measured are
  child processes); yields the environment that points gcsfs at it."""
  import socket

  from gcp_storage_emulator.server import create_server
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  try:
    # gcsfs talks to STORAGE_EMULATOR_HOST without credentials; its hierarchical-namespace probe
    # is not implemented by the emulator.
    yield {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
  finally:
    server.stop()


# ------------------------------------------------------------------ the counting filesystem

def _counting_filesystem():
  """The local filesystem, under counted://, counting each call the code makes (not the calls
  fsspec's own methods make to each other)."""
  import collections
  import threading

  from fsspec.implementations.local import LocalFileSystem
  counts = collections.Counter()
  depth = threading.local()

  class Counted(LocalFileSystem):
    protocol = "counted"

    @classmethod
    def _strip_protocol(cls, path):
      return super()._strip_protocol(path[len("counted://"):] if path.startswith("counted://") else path)

    def unstrip_protocol(self, name):
      return "counted://" + name

  for name in ("ls", "info", "glob", "find", "cat_file", "_open", "isdir", "exists", "rm_file", "pipe_file"):
    method = getattr(LocalFileSystem, name)

    def counted(self, *args, _name=name, _method=method, **kwargs):
      outermost = not getattr(depth, "level", 0)
      if outermost:
        counts[_name.strip("_")] += 1
      depth.level = getattr(depth, "level", 0) + 1
      try:
        return _method(self, *args, **kwargs)
      finally:
        depth.level -= 1
    setattr(Counted, name, counted)
  return Counted, counts


def run_counted(code: str, argv: list[str], counts_path: str) -> int:
  """pipeline.run.main of the code in `code`, every filesystem call counted."""
  sys.path.insert(0, code)
  import fsspec
  filesystem, counts = _counting_filesystem()
  fsspec.register_implementation("counted", filesystem, clobber=True)
  from pipeline.run import main
  try:
    return main(argv)
  finally:
    with open(counts_path, "w") as f:
      json.dump(dict(counts), f)


# ------------------------------------------------------------------------------ fixtures

def shards(n: int) -> str:
  directory = os.path.join(common.BENCH_DIR, f"launch-{n}", "in")
  if not os.path.exists(os.path.join(directory, "..", "done")):
    os.makedirs(directory, exist_ok=True)
    for s in range(n):
      with open(os.path.join(directory, f"s{s:06d}.jsonl"), "w") as f:
        f.write(json.dumps({"id": s, "text": f"광합성 문서 {s}"}, ensure_ascii=False) + "\n")
    open(os.path.join(directory, "..", "done"), "w").close()
  return directory


def key(source: str) -> str:
  return f"{os.path.basename(source)}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def finished_output(n: int, layout: str, config: dict) -> str:
  """An output directory as a finished run of `layout` ("before": flat markers and _shards/;
  "after": partitioned markers and unit summaries) leaves it."""
  out = os.path.join(common.BENCH_DIR, f"launch-{n}", f"done-{layout}")
  if os.path.exists(os.path.join(out, "stats.json")):
    return out
  counts = {"records": 1, "scored": 1, "kept": 0, "errored": 0, "errors_by_reason": {}, "tokens": 9,
            "truncated": 0, "int_score_histogram": [1, 0, 0, 0, 0, 0], "score_histogram": [0] * 70}
  for s in range(n):
    # As both versions name a local shard: by its plain path (counted:// is a local filesystem).
    source = os.path.join(shards(n), f"s{s:06d}.jsonl")
    k = key(source)
    if layout == "before":
      paths = {f"_done/{k}-00000.json": counts, f"_shards/{k}.json": {"source": source, "chunks": 1}}
    else:  # as pipeline.state writes them: the precision and the shard's identity recorded
      from fsspec.implementations.local import LocalFileSystem

      from pipeline.state import layout as state_layout, progress
      identity = progress.shard_identity(LocalFileSystem().info(source))
      mark = {**counts, "precision": "float32", "shard": identity}
      paths = {f"_done/{k[-12]}/{k}-00000.json": mark,
               f"_units/{k[-12]}/{k}-u0000of0001-{state_layout.version(identity)}.json":
                   {**mark, "chunks": 1, "this_attempt": counts}}
    for name, content in paths.items():
      os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
      with open(os.path.join(out, name), "w") as f:
        json.dump(content, f)
  with open(os.path.join(out, "_run.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(out, "stats.json"), "w") as f:
    json.dump({"records_read": n, "scored": n, "kept": 0, "errored": 0, "errors_by_reason": {},
               "int_score_histogram": {"0": n}, "shards": {"matched": n, "complete": n, "this_run": 0},
               "threshold": 3.0, "scored_this_run": 0, "started": "2026-01-01T00:00:00+00:00"}, f)
  return out


def run_manifest(layout: str, model: str) -> dict:
  """The _run.json a run with default settings writes, in either layout."""
  from model import hub
  from pipeline import state
  from pipeline.options import ScoringConfig
  info = hub.describe(model)
  wanted = state.wanted(ScoringConfig(input="x", output="x", model=model), info)
  if layout == "before":  # the settings the old code recorded
    return {k: wanted[k] for k in ("model", "weights_digest", "threshold", "max_length", "text_field", "id_field")}
  return wanted


# ------------------------------------------------------------------------------ measuring

def measure(code: str, argv: list[str], env: dict) -> dict:
  counts = os.path.join(common.BENCH_DIR, "launch-counts.json")
  cmd = [sys.executable, "-m", "bench.launch", "--code", code, "--variant", json.dumps(argv),
         "--counts", counts]
  with common.Interference().measure() as busy:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO, env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
  if proc.returncode:
    sys.stderr.write(proc.stderr[-3000:])
    raise SystemExit(f"{' '.join(argv[:4])}... failed")
  return {"seconds": seconds, "calls": json.load(open(counts)), "others_busy": busy.fraction}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shards", default="2000,20000")
  parser.add_argument("--before", default=BEFORE)
  parser.add_argument("--code", help=argparse.SUPPRESS)
  parser.add_argument("--variant", help=argparse.SUPPRESS)
  parser.add_argument("--counts", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.variant:
    return run_counted(args.code, json.loads(args.variant), args.counts)

  from model.random_checkpoint import save_checkpoint
  command = common.command_line()
  model = os.path.join(common.BENCH_DIR, "launch-model")
  if not os.path.exists(os.path.join(model, "config.json")):
    save_checkpoint(model, tokenizer_dir=common.tokenizer_dir(), max_position_embeddings=common.MAX_POSITIONS)
  codes = {"before": common.worktree(args.before), "after": common.REPO}
  rows, results = [], []
  with gcs_emulator() as env:
    for n in (int(x) for x in args.shards.split(",")):
      glob = "counted://" + os.path.join(shards(n), "*.jsonl")
      for label, code in codes.items():
        job = os.path.join(common.BENCH_DIR, f"launch-{n}", f"job-{label}.json")
        launch = measure(code, ["--runner=DataflowRunner", "--project=koedu-project", "--region=us-central1",
                                f"--temp_location=gs://{BUCKET}/tmp", f"--staging_location=gs://{BUCKET}/staging",
                                "--input", glob, "--output", f"counted://{common.BENCH_DIR}/launch-{n}/out-{label}",
                                "--model", model, "--dry_run=True", f"--dataflow_job_file={job}"], env)
        graph = os.path.getsize(job + ".pipeline.json") if os.path.exists(job + ".pipeline.json") else None
        done = finished_output(n, label, run_manifest(label, model))
        resume = measure(code, ["--input", glob, "--output", f"counted://{done}", "--model", model], env)
        results.append({"shards": n, "code": label, "launch": launch, "resume": resume, "graph_bytes": graph})
        for phase, r in (("launch", launch), ("resume", resume)):
          calls = r["calls"]
          rows.append([n, label, phase, f"{r['seconds']:.1f}", sum(calls.values()),
                       calls.get("glob", 0) + calls.get("find", 0) + calls.get("ls", 0),
                       calls.get("isdir", 0) + calls.get("info", 0) + calls.get("exists", 0),
                       calls.get("cat_file", 0) + calls.get("open", 0),
                       f"{graph / 1e6:.2f} MB" if phase == "launch" and graph else ""])
        common.log(" ".join(map(str, rows[-2])) + " | " + " ".join(map(str, rows[-1])))
  common.save_results("launch", {"runs": results, "command": command})
  common.update_doc("launch", "\n\n".join([
      common.provenance([r["launch"] for r in results] + [r["resume"] for r in results], command),
      common.table(["shards", "code", "phase", "seconds", "filesystem calls", "listings", "lookups",
                    "reads", "job graph"], rows)]))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
