"""Keeping the accelerator fed: koedu's host path against the tokenizer alone.

    python -m bench.feed [--documents 48000] [--label after]

1. host: `python -m pipeline.run` as it is, a whole process (exec to exit), over the benchmark
   documents, scoring with the "free" model: a real checkpoint of no encoder layers (embeddings,
   LayerNorm and the head, width 8), whose batches cost the devices about a millisecond, so
   what is measured is the path production runs (reading, parsing, tokenizing, packing, the
   device thread, writing) with nothing replaced. Against the checkpoint's tokenizer alone
   encoding the same texts with every core (the Rust batch path, truncation on, no Python
   around it). Also the rate once the devices are ready (start-up excluded), and pipeline.run
   computing the "nothing" model (2 layers, width 32) on this CPU, now and at the commit before
   this work (--before): on two cores its attention at 512 tokens competes with the host path.
2. threads and cores: (1) with --host_threads 1, 2, 4 ... up to the machine's cores, and with one
   thread pinned to one core: the host docs/s per vCPU that docs/operations.md sizes workers by.
How busy a real accelerator stays when this host path feeds it is measured on one, by
bench/gpu.py (host docs/s by thread count beside the GPU's docs/s). Each variant runs in its own
process on a quiet machine (bench/common.py wait_until_quiet).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

from bench import common

SHARD_DOCUMENTS = 4000
READY = re.compile(r"^(\S+ \S+),\d+ INFO pipeline\.\w+: the devices are ready")


def _small_model(name: str, **shape) -> str:
  out = os.path.join(common.BENCH_DIR, name)
  if not os.path.exists(os.path.join(out, "config.json")):
    from model.random_checkpoint import save_checkpoint
    save_checkpoint(out + ".tmp", **shape, max_position_embeddings=common.MAX_POSITIONS,
                    tokenizer_dir=common.tokenizer_dir(), seed=0)
    os.rename(out + ".tmp", out)
  return out


def nothing_model() -> str:
  """A classifier that costs little to run (2 layers, width 32), with the benchmark tokenizer."""
  return _small_model("xlmr-nothing", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64)


def free_model() -> str:
  """A classifier of no encoder layers (width 8): a batch of 16,384 tokens is an embedding
  lookup, a LayerNorm and the head, so the devices cost nothing beside the host path."""
  return _small_model("xlmr-free", hidden_size=8, num_hidden_layers=0, num_attention_heads=1,
                      intermediate_size=8)


def corpus(n: int) -> str:
  directory = os.path.join(common.BENCH_DIR, f"feed-{n}")
  if not os.path.exists(os.path.join(directory, "done")):
    os.makedirs(directory, exist_ok=True)
    texts = common.documents(n)
    for s in range(0, n, SHARD_DOCUMENTS):
      with open(os.path.join(directory, f"web-{s // SHARD_DOCUMENTS:05d}.jsonl"), "w", encoding="utf-8") as f:
        for i, text in enumerate(texts[s:s + SHARD_DOCUMENTS]):
          f.write(json.dumps({"id": f"doc-{s + i:06d}", "text": text}, ensure_ascii=False) + "\n")
    open(os.path.join(directory, "done"), "w").close()
  return directory


def texts_of(directory: str) -> list[str]:
  texts = []
  for name in sorted(os.listdir(directory)):
    if name.endswith(".jsonl"):
      with open(os.path.join(directory, name), encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for line in f]
  return texts


# ------------------------------------------------------------------------------- variants

def measure_tokenizer(directory: str) -> dict:
  from model.recipe import PREFIX
  from model.tokenize import DocumentTokenizer
  texts = texts_of(directory)
  tokenizer = DocumentTokenizer(free_model(), common.MAX_LENGTH).load()
  backend = tokenizer._backend
  with common.Interference().measure() as busy:
    start = time.perf_counter()
    backend.encode_batch_fast([PREFIX + t for t in texts])
    raw = time.perf_counter() - start
    start = time.perf_counter()
    tokenizer(texts)
    ours = time.perf_counter() - start
  return {"documents": len(texts), "raw_seconds": raw, "document_tokenizer_seconds": ours,
          "others_busy": busy.fraction}


def run_pipeline_process(directory: str, threads: int | None, output: str, code: str = common.REPO,
                         free_device: bool = True, cores: int | None = None) -> dict:
  """pipeline.run as a child process, timed from exec to exit: scoring with the free model
  (the host path alone), or with the nothing model on this CPU. threads None: the code's own
  default (the "before" code has no --host_threads). cores: the process pinned to that many of
  the machine's cores (the Rust tokenizer sizes its pool by them)."""
  shutil.rmtree(output, ignore_errors=True)
  model = free_model() if free_device else nothing_model()
  run = pipeline_args(directory, output, model, os.path.basename(code))
  run += ["--host_threads", str(threads)] if threads else []
  cmd = [sys.executable, "-m", "pipeline.run", *run]
  with common.Interference().measure() as busy:
    start = time.perf_counter()
    pin = (lambda: os.sched_setaffinity(0, range(cores))) if cores else None
    proc = subprocess.run(cmd, cwd=code, capture_output=True, text=True, preexec_fn=pin)
    wall = time.perf_counter() - start
  if proc.returncode:
    sys.stderr.write(proc.stderr[-3000:])
    raise SystemExit("pipeline.run failed")
  stats = json.load(open(os.path.join(output, "stats.json")))
  ready = [READY.match(line) for line in proc.stderr.splitlines()]
  ready = next((m.group(1) for m in ready if m), None)
  return {"threads": threads, "cores": cores or os.cpu_count(), "free_device": free_device, "wall_seconds": wall, "documents": stats["scored"],
          "others_busy": busy.fraction, "ready_to_end_seconds": _seconds_after(ready, stats) if ready else None}


def pipeline_args(directory: str, output: str, model: str, cache: str = "main") -> list[str]:
  return ["--input", os.path.join(directory, "*.jsonl"), "--output", output, "--model", model,
          "--compilation_cache_dir", os.path.join(common.BENCH_DIR, f"feed-jax-cache-{cache}")]


def _seconds_after(ready: str, stats: dict) -> float:
  """Seconds from the devices being ready to the end of the run (stats.json's wall clock)."""
  import datetime
  started = datetime.datetime.fromisoformat(stats["started"]).timestamp()
  ready_at = time.mktime(time.strptime(ready, "%Y-%m-%d %H:%M:%S"))
  return started + stats["wall_time_seconds"] - ready_at


# ------------------------------------------------------------------------------- the report

def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--documents", type=int, default=48000)
  parser.add_argument("--label", default="after")
  parser.add_argument("--threads", default=None, help="host threads to try (default 1, 2, 4 .. cores)")
  parser.add_argument("--before", default="9d75996", help="the commit to time whole process too ('' for none)")
  parser.add_argument("--variant", help=argparse.SUPPRESS)
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  directory = corpus(args.documents)
  output = os.path.join(common.BENCH_DIR, "feed-out")
  if args.variant:
    result = measure_tokenizer(directory)
    with open(args.json, "w") as f:
      json.dump(result, f)
    return 0

  command = common.command_line()
  nothing_model(), free_model()
  cores = os.cpu_count() or 1
  threads = [int(t) for t in args.threads.split(",")] if args.threads else \
      sorted({min(cores, 2 ** k) for k in range(8) if 2 ** k <= cores} | {cores})
  common.wait_until_quiet()
  tokenizer = common.run_variant("bench.feed", ["--documents", str(args.documents), "--variant", "tokenizer"])
  run_pipeline_process(directory, cores, output, free_device=False)  # fills the compilation caches
  run_pipeline_process(directory, cores, output)
  host = []
  for n in threads:
    common.wait_until_quiet()
    host.append(run_pipeline_process(directory, n, output))
    common.log(f"host path, {n} threads: {host[-1]}")
  if cores > 1:
    common.wait_until_quiet()
    host.append(run_pipeline_process(directory, 1, output, cores=1))
    common.log(f"host path, 1 thread on 1 core: {host[-1]}")
  common.wait_until_quiet()
  tiny = run_pipeline_process(directory, None, output, free_device=False)
  common.log(f"host path computing the nothing model: {tiny}")
  before = None
  if args.before:
    code = common.worktree(args.before)
    run_pipeline_process(directory, None, output, code, free_device=False)  # its compilation cache
    common.wait_until_quiet()
    before = {**run_pipeline_process(directory, None, output, code, free_device=False), "commit": args.before}
    common.log(f"host path before ({args.before}): {before}")
  results = {"tokenizer": tokenizer, "host": host, "tiny": tiny, "before": before,
             "command": command}
  common.save_results(f"feed-{args.label}", results)
  common.update_doc(f"feed {args.label}", report(results, command))
  return 0


def report(r: dict, command: str) -> str:
  tok = r["tokenizer"]
  raw, ours = tok["documents"] / tok["raw_seconds"], tok["documents"] / tok["document_tokenizer_seconds"]

  def row(label, h):
    whole = h["documents"] / h["wall_seconds"]
    steady = h["documents"] / h["ready_to_end_seconds"] if h.get("ready_to_end_seconds") else None
    return [label, h["documents"], f"{h['wall_seconds']:.1f}", f"{whole:.0f}", f"{whole / raw:.2f}",
            f"{steady:.0f}" if steady else "-", f"{steady / raw:.2f}" if steady else "-"]

  rows = [row(f"host path, {h['threads']} host thread(s) on {h.get('cores', '?')} core(s), free model", h)
          for h in r["host"]]
  rows.append(row("after: computing the nothing model on this CPU, default threads", r["tiny"]))
  if r.get("before"):
    rows.append(row(f"before ({r['before']['commit']}): computing the nothing model, its defaults", r["before"]))
  return "\n\n".join([
      common.provenance([tok, *r["host"], r["tiny"]] + ([r["before"]] if r.get("before") else []), command),
      f"Tokenizer alone (the Rust batch path, every core, truncation on): **{raw:.0f} docs/s**; "
      f"through koedu's DocumentTokenizer (ids as numpy, truncation flags): {ours:.0f} docs/s.",
      common.table(["run", "documents", "whole process s", "docs/s whole process", "of tokenizer alone",
                    "docs/s once ready", "of tokenizer alone"], rows),
      "The free device is the free model's: pipeline.run unchanged, its batches of no encoder "
      "layers costing the devices about a millisecond each."])


if __name__ == "__main__":
  raise SystemExit(main())
