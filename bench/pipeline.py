"""`python -m pipeline.run` end to end on the DirectRunner, timed as a whole process.

    python -m bench.pipeline [--documents 768] [--size base] [--label after]

Writes the benchmark documents as one JSON-lines shard, then runs the job twice with a fresh
JAX compilation cache before the first run and the same cache for the second, each into a new
output directory. Wall time is the process's, from exec to exit (imports, model loading,
compiling, reading, scoring, writing, Beam); peak RSS is the process's own (wait4). The second
run shows what a scheduled rerun costs: the log's compile lines and the cache's entry count say
whether anything was compiled.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

from bench import common

COMPILED = re.compile(r"compiled the encoder for (\d+) x (\d+) tokens in ([\d.]+)s")
# The same documents through the other engines, each as the plain script a user would write
# (bench/engines.py), timed as whole processes too.
ENGINES = ("openvino-throughput", "openvino-latency", "onnxruntime", "transformers")


def write_shard(n: int) -> str:
  path = os.path.join(common.BENCH_DIR, f"corpus-{n}", "web-00000.jsonl")
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      for i, text in enumerate(common.documents(n)):
        f.write(json.dumps({"id": f"doc-{i:06d}", "text": text}, ensure_ascii=False) + "\n")
    os.rename(path + ".tmp", path)
  return path


def cache_entries(directory: str) -> int:
  return len([p for p in glob.glob(os.path.join(directory, "**"), recursive=True) if os.path.isfile(p)])


def run_once(cmd: list[str], output: str, cache: str, env: dict) -> dict:
  before = cache_entries(cache)
  logs = os.path.join(output + ".log")
  with common.Interference().measure() as busy, open(logs, "w+") as log_file:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.REPO, stdout=log_file, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})
    # wait4 gives this child's own peak RSS, not the maximum over every child so far.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = status = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    log_file.seek(0)
    stderr = log_file.read()
  if status != 0:
    sys.stderr.write(stderr)
    raise SystemExit(f"pipeline.run failed with status {status}")
  stats = json.load(open(os.path.join(output, "stats.json")))
  compiled = [(int(r), int(l), float(s)) for r, l, s in COMPILED.findall(stderr)]
  return {"wall_seconds": wall, "peak_rss_gib": usage.ru_maxrss / 2**20, "cpu_seconds": usage.ru_utime + usage.ru_stime,
          "stats": stats, "compiled": compiled, "cache_entries_before": before,
          "cache_entries_after": cache_entries(cache), "others_busy": busy.fraction, "log_tail": stderr[-3000:]}


def run_script(cmd: list[str]) -> dict:
  with common.Interference().measure() as busy:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status):
    sys.stderr.write(proc.stderr.read()[-3000:])
    raise SystemExit(f"{' '.join(cmd[:4])} failed")
  return {"wall_seconds": wall, "peak_rss_gib": usage.ru_maxrss / 2**20, "others_busy": busy.fraction}


def scores_of(output: str) -> dict:
  import pyarrow.parquet as pq
  table = pq.read_table(os.path.join(output, "scores"))
  return dict(zip(table.column("id").to_pylist(), table.column("score").to_pylist()))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--documents", type=int, default=768)
  parser.add_argument("--size", default="base")
  parser.add_argument("--label", default="after")
  parser.add_argument("--xla_flags", default=None, help="XLA_FLAGS for the pipeline process")
  parser.add_argument("--no_doc", action="store_true")
  parser.add_argument("--engines", default=",".join(ENGINES),
                      help="engine scripts to time beside it ('' for none); ENGINE:tokenizers for "
                           "the script that tokenizes without importing transformers")
  parser.add_argument("extra", nargs="*", help="more pipeline.run options, after --")
  args = parser.parse_args(argv)
  command = common.command_line()

  shard = write_shard(args.documents)
  model = common.checkpoint(args.size)
  work = os.path.join(common.BENCH_DIR, f"pipeline-{args.label}")
  shutil.rmtree(work, ignore_errors=True)
  cache = os.path.join(work, "jax-cache")
  os.makedirs(cache)
  env = {"XLA_FLAGS": args.xla_flags} if args.xla_flags is not None else {}
  runs = []
  for i in (1, 2):
    output = os.path.join(work, f"out{i}")
    cmd = [sys.executable, "-m", "pipeline.run", "--input", shard, "--output", output, "--model", model,
           "--compilation_cache_dir", cache, *args.extra]
    common.wait_until_quiet()
    common.log("$ " + " ".join(cmd))
    run = run_once(cmd, output, cache, env)
    run["command"] = " ".join(["python", *cmd[1:]]).replace(common.BENCH_DIR, "$KOEDU_BENCH_DIR")
    runs.append(run)
    common.log(f"run {i}: {run['wall_seconds']:.1f}s, {args.documents / run['wall_seconds']:.2f} docs/s, "
               f"compiled {len(run['compiled'])} shapes, cache {run['cache_entries_before']} -> "
               f"{run['cache_entries_after']} entries")
  scripts = []
  for engine in filter(None, args.engines.split(",")):
    from bench import engines
    name, _, tokenizer = engine.partition(":")  # openvino-bf16:tokenizers, the leanest script
    engines.ensure_converted(args.size, name)
    out = os.path.join(work, f"{engine.replace(':', '-')}.parquet")
    cmd = [sys.executable, "-m", "bench.engines", "--engine", name, "--size", args.size, "--input", shard,
           "--output", out, *(["--tokenizer", tokenizer] if tokenizer else [])]
    common.wait_until_quiet()
    common.log("$ " + " ".join(cmd))
    run = run_script(cmd)
    import pyarrow.parquet as pq
    theirs = dict(zip(*(pq.read_table(out).column(c).to_pylist() for c in ("id", "score"))))
    ours = scores_of(os.path.join(work, "out2"))
    run.update(engine=engine, max_abs_diff=max(abs(ours[k] - theirs[k]) for k in ours))
    scripts.append(run)
    common.log(f"{engine}: {run['wall_seconds']:.1f}s, {args.documents / run['wall_seconds']:.2f} docs/s")
  first, second = scores_of(os.path.join(work, "out1")), scores_of(os.path.join(work, "out2"))
  same = max(abs(first[k] - second[k]) for k in first)
  result = {"documents": args.documents, "size": args.size, "runs": runs, "scripts": scripts, "rerun_max_abs_diff": same,
            "tokens": runs[0]["stats"].get("tokens"), "command": command, "xla_flags": args.xla_flags}
  common.save_results(f"pipeline-{args.label}", result)

  rows = []
  for i, r in enumerate(runs, 1):
    compile_s = sum(s for _, _, s in r["compiled"])
    rows.append([i, f"{r['wall_seconds']:.1f}", f"{args.documents / r['wall_seconds']:.2f}",
                 f"{r['stats'].get('tokens', 0) / r['wall_seconds']:.0f}", len(r["compiled"]), f"{compile_s:.1f}",
                 f"{r['cache_entries_before']} -> {r['cache_entries_after']}", f"{r['peak_rss_gib']:.2f}",
                 f"{r['cpu_seconds']:.0f}"])
  body = "\n\n".join([
      common.provenance(runs, command),
      f"{args.documents} documents ({args.size}), one JSON-lines shard; each run: `{runs[0]['command']}` "
      f"(second run into out2). Wall time of the whole process; tokens counted after truncation, "
      f"special tokens included. Scores of the two runs differ by at most {same:.1e}.",
      common.table(["run", "wall s", "docs/s", "tok/s", "shapes compiled", "compile s (log)",
                    "cache entries", "peak RSS GiB", "CPU s"], rows)])
  if scripts:
    warm = runs[1]["wall_seconds"]
    body += "\n\n" + ("The other engines as plain scripts (bench/engines.py: read the shard, tokenize, "
                       "length-sorted batches of 16, score, write Parquet), whole processes; their "
                       "conversion was made once before, outside the clock:\n\n") + common.table(
        ["engine script", "wall s", "docs/s", "koedu's warm run against it", "max |diff| vs koedu", "peak RSS GiB"],
        [[s["engine"], f"{s['wall_seconds']:.1f}", f"{args.documents / s['wall_seconds']:.2f}",
          f"{s['wall_seconds'] / warm:.2f}x", f"{s['max_abs_diff']:.1e}", f"{s['peak_rss_gib']:.2f}"]
         for s in scripts])
  print(body)
  if not args.no_doc:
    common.update_doc(f"pipeline {args.label}", body)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
