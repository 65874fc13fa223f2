"""Keeping the accelerator fed: koedu's host path against the tokenizer alone, and a simulated
device driven by the real host path.

    python -m bench.feed [--documents 48000] [--label after]

1. host: `python -m pipeline.run` as a whole process (exec to exit) over the benchmark
   documents, its device replaced by one that costs nothing (the encoder runner's dispatch and
   collect; reading, parsing, tokenizing, packing, the device thread's queue and writing are
   pipeline.run's), against the checkpoint's tokenizer alone encoding the same texts with every
   core (the Rust batch path, truncation on, no Python around it). Also the rate once the
   devices are ready (start-up excluded), and pipeline.run as it is, computing a model of 2
   layers and width 32 on this CPU, now and at the commit before this work (--before): on two
   cores that "nothing" model's attention at 512 tokens competes with the host path for them.
2. device: the same host path feeding a simulated accelerator that takes documents / rate
   seconds per batch without holding the GIL (time.sleep), at 80% of the host path's rate from
   (1); what fraction of the time from its first batch to its last it was busy.
3. threads and cores: (1) with --host_threads 1, 2, 4 ... up to the machine's cores, and with one
   thread pinned to one core: the host docs/s per vCPU that docs/operations.md sizes workers by.
Each variant runs in its own process on a quiet machine (bench/common.py wait_until_quiet).
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


def nothing_model() -> str:
  """A classifier that costs almost nothing to run (2 layers, width 32), with the benchmark
  tokenizer: what is left of a run is its host path."""
  out = os.path.join(common.BENCH_DIR, "xlmr-nothing")
  if not os.path.exists(os.path.join(out, "config.json")):
    from tests.checkpoints import save_checkpoint
    save_checkpoint(out + ".tmp", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=common.MAX_POSITIONS,
                    tokenizer_dir=common.tokenizer_dir(), seed=0)
    os.rename(out + ".tmp", out)
  return out


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
  tokenizer = DocumentTokenizer(nothing_model(), common.MAX_LENGTH).load()
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
  """pipeline.run as a child process, timed from exec to exit: with a device that costs nothing
  (bench.feed --variant simulated --rate 0, the host path alone), or as it is, computing the
  nothing model on this CPU. threads None: the code's own default (the "before" code has no
  --host_threads). cores: the process pinned to that many of the machine's cores (the Rust
  tokenizer sizes its pool by them)."""
  shutil.rmtree(output, ignore_errors=True)
  run = pipeline_args(directory, output, os.path.basename(code))
  run += ["--host_threads", str(threads)] if threads else []
  cmd = [sys.executable, "-m", "pipeline.run", *run]
  if free_device:
    cmd = [sys.executable, "-m", "bench.feed", "--variant", "simulated", "--rate", "0", "--run", json.dumps(run)]
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


def pipeline_args(directory: str, output: str, cache: str = "main") -> list[str]:
  return ["--input", os.path.join(directory, "*.jsonl"), "--output", output, "--model", nothing_model(),
          "--compilation_cache_dir", os.path.join(common.BENCH_DIR, f"feed-jax-cache-{cache}")]


def _seconds_after(ready: str, stats: dict) -> float:
  """Seconds from the devices being ready to the end of the run (stats.json's wall clock)."""
  import datetime
  started = datetime.datetime.fromisoformat(stats["started"]).timestamp()
  ready_at = time.mktime(time.strptime(ready, "%Y-%m-%d %H:%M:%S"))
  return started + stats["wall_time_seconds"] - ready_at


def simulate_device(rate: float) -> dict:
  """Replace the encoder runner's dispatch and collect by a device that takes documents / rate
  seconds per batch (rate 0: no time at all), waiting without holding the GIL as a TPU call
  does; everything before and after it is pipeline.run's. Returns the device's running totals,
  from its first batch of documents (the probe batch at start-up is not counted)."""
  import numpy as np

  from model import runner
  device = {"free_at": 0.0, "busy": 0.0, "first": None, "last": 0.0, "batches": 0, "gaps": [],
            "dispatches": 0}

  def dispatch(self, batch):
    now = time.perf_counter()
    start = max(now, device["free_at"])
    cost = len(batch.documents) / rate if rate else 0.0
    device["free_at"] = start + cost
    device["dispatches"] += 1
    if device["dispatches"] == 1:
      return runner.Dispatched(batch, device["free_at"])  # the start-up probe: not the documents'
    if device["first"] is not None and now > device["last"]:
      device["gaps"].append((device["last"] - device["first"], now - device["last"]))
    device["busy"] += cost
    device["first"] = start if device["first"] is None else device["first"]
    device["last"] = device["free_at"]
    device["batches"] += 1
    return runner.Dispatched(batch, device["free_at"])

  def collect(self, dispatched, out):
    wait = dispatched.output - time.perf_counter()
    if wait > 0:
      time.sleep(wait)  # the device computes; the host threads run meanwhile
    out[dispatched.batch.documents] = np.float32(0)

  runner.EncoderRunner.dispatch, runner.EncoderRunner.collect = dispatch, collect
  return device


def run_simulated(rate: float, argv: list[str]) -> dict:
  """pipeline.run in this process, its device simulated at `rate` documents/s."""
  device = simulate_device(rate)
  from pipeline.run import main
  with common.Interference().measure() as busy:
    assert main(argv) == 0
  span = device["last"] - device["first"]
  return {"rate": rate, "busy_seconds": device["busy"], "span_seconds": span,
          "utilization": device["busy"] / span if rate else None, "batches": device["batches"],
          # (seconds after the first batch, seconds idle): when the device waited for the host
          "longest_waits": sorted(device["gaps"], key=lambda g: -g[1])[:10],
          "others_busy": busy.fraction}


# ------------------------------------------------------------------------------- the report

def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--documents", type=int, default=48000)
  parser.add_argument("--label", default="after")
  parser.add_argument("--threads", default=None, help="host threads to try (default 1, 2, 4 .. cores)")
  parser.add_argument("--before", default="9d75996", help="the commit to time whole process too ('' for none)")
  parser.add_argument("--variant", help=argparse.SUPPRESS)
  parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
  parser.add_argument("--json", help=argparse.SUPPRESS)
  parser.add_argument("--run", help=argparse.SUPPRESS)  # --variant simulated: pipeline.run's argv, JSON
  args = parser.parse_args(argv)
  if args.variant == "simulated":
    result = run_simulated(args.rate, json.loads(args.run))
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f)
    return 0
  directory = corpus(args.documents)
  output = os.path.join(common.BENCH_DIR, "feed-out")
  if args.variant:
    result = measure_tokenizer(directory)
    with open(args.json, "w") as f:
      json.dump(result, f)
    return 0

  command = common.command_line()
  nothing_model()
  cores = os.cpu_count() or 1
  threads = [int(t) for t in args.threads.split(",")] if args.threads else \
      sorted({min(cores, 2 ** k) for k in range(8) if 2 ** k <= cores} | {cores})
  common.wait_until_quiet()
  tokenizer = common.run_variant("bench.feed", ["--documents", str(args.documents), "--variant", "tokenizer"])
  run_pipeline_process(directory, cores, output, free_device=False)  # fills the compilation cache
  host = []
  for n in threads:
    common.wait_until_quiet()
    host.append(run_pipeline_process(directory, n, output))
    common.log(f"host path, {n} threads: {host[-1]}")
  if cores > 1:
    common.wait_until_quiet()
    host.append(run_pipeline_process(directory, 1, output, cores=1))
    common.log(f"host path, 1 thread on 1 core: {host[-1]}")
  best = max(host, key=lambda h: h["documents"] / h["wall_seconds"])
  steady = best["documents"] / best["ready_to_end_seconds"]
  common.wait_until_quiet()
  shutil.rmtree(output, ignore_errors=True)
  device = common.run_variant("bench.feed", ["--variant", "simulated", "--rate", str(0.8 * steady),
                                             "--run", json.dumps(pipeline_args(directory, output))])
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
  results = {"tokenizer": tokenizer, "host": host, "device": device, "tiny": tiny, "before": before,
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

  rows = [row(f"host path, {h['threads']} host thread(s) on {h.get('cores', '?')} core(s), free device", h)
          for h in r["host"]]
  rows.append(row("after: computing the nothing model on this CPU, default threads", r["tiny"]))
  if r.get("before"):
    rows.append(row(f"before ({r['before']['commit']}): computing the nothing model, its defaults", r["before"]))
  d = r["device"]
  return "\n\n".join([
      common.provenance([tok, *r["host"], d, r["tiny"]] + ([r["before"]] if r.get("before") else []), command),
      f"Tokenizer alone (the Rust batch path, every core, truncation on): **{raw:.0f} docs/s**; "
      f"through koedu's DocumentTokenizer (ids as numpy, truncation flags): {ours:.0f} docs/s.",
      common.table(["run", "documents", "whole process s", "docs/s whole process", "of tokenizer alone",
                    "docs/s once ready", "of tokenizer alone"], rows),
      f"Simulated device at {d['rate']:.0f} docs/s (80% of the host path's rate once ready), fed by "
      f"the real host path: busy **{d['utilization']:.1%}** of the {d['span_seconds']:.1f} s from its "
      f"first batch of documents to its last ({d['batches']} batches; the probe batch at start-up, "
      f"before any document is read, not counted). Longest waits for the host: "
      + ", ".join(f"{w * 1000:.0f} ms at {t:.1f} s" for t, w in d["longest_waits"][:3]) + "."])


if __name__ == "__main__":
  raise SystemExit(main())
