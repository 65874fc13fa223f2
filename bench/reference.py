"""How people score today: transformers + PyTorch, ONNX Runtime and OpenVINO on CPU.

    python -m bench.reference [--documents 768] [--large_documents 96] [--sizes base,large]
                              [--engines transformers,onnxruntime,openvino] [--threads 2]

transformers + PyTorch in two orders with batches of 32 padded to the longest: documents as they
arrive (fineweb-edu's classifier script: `tokenizer(texts, padding="longest", truncation=True)`
per batch), and sorted by token count first (NeMo Curator's way, which pads far less); and
sorted with batches of 16, beside the other engines, all of which run sorted batches of 16:

- ONNX Runtime: the model exported by `torch.onnx.export` (TorchScript exporter, eager
  attention so that the optimizer recognises it; dynamic batch and sequence axes), then
  `onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`, whose fusions
  (Attention, SkipLayerNormalization, BiasGelu, ...) are listed in the results; CPU provider,
  every graph optimization on.
- OpenVINO: `openvino.convert_model` from the PyTorch model (dynamic shapes), compiled for CPU
  with `INFERENCE_PRECISION_HINT=f32` (on CPUs with AVX512-BF16 or AMX it would otherwise
  compute in bf16; the precision of the compiled graph's matmuls is checked and recorded) and
  the LATENCY hint (one stream, one request at a time) or the THROUGHPUT hint (as many streams
  and requests in flight as it asks for, through `AsyncInferQueue`). One more row computes in
  bf16, for its agreement with fp32.

Same random checkpoint, same documents, the same "passage: " prefix and 512-token truncation as
koedu, fp32 unless said, `--threads` threads for every engine (default 2, this machine's cores).
Each engine runs in its own process. The clock runs from the first tokenization to the last
score; loading is reported apart, and so is converting (done once per checkpoint, cached in
the bench directory). Every engine's scores are compared with transformers' fp32 scores
(sorted, batches of 32): max |difference| and int_score agreement.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bench import common, engines

BATCH = 32
PREFIX = "passage: "
# (engine, order, batch): what one row measures. transformers' arrival/sorted-32 rows come first,
# as bench.summary takes the first base row of each order as the reference.
VARIANTS = [
    ("transformers", "arrival", 32),
    ("transformers", "sorted", 32),
    ("transformers", "sorted", 16),
    ("onnxruntime", "sorted", 16),
    ("openvino-latency", "sorted", 16),
    ("openvino-throughput", "sorted", 16),
    ("openvino-bf16", "sorted", 16),
]
ENGINE_LABELS = {
    "transformers": "transformers + PyTorch",
    "onnxruntime": "ONNX Runtime, fused",
    "openvino-latency": "OpenVINO f32, LATENCY",
    "openvino-throughput": "OpenVINO f32, THROUGHPUT",
    "openvino-bf16": "OpenVINO bf16, LATENCY",
}
REFERENCE_KEY = ("transformers", "sorted", 32)


def _key(r: dict) -> tuple:
  return (r["size"], r.get("engine", "transformers"), r["order"], r.get("batch", BATCH))


def measure(size: str, engine: str, order: str, batch: int, n: int, threads: int) -> dict:
  from transformers import AutoTokenizer
  texts = common.documents(n)
  model_dir = common.checkpoint(size)
  start = time.perf_counter()
  tokenizer = AutoTokenizer.from_pretrained(model_dir)
  infer, queue, extra = engines.load(size, engine, threads)
  load_seconds = time.perf_counter() - start

  scores = np.empty(n, np.float32)
  real = computed = 0
  with common.Interference().measure() as busy:
    start = time.perf_counter()
    if order == "arrival":
      ids = None
      encode = lambda idx: tokenizer([PREFIX + texts[i] for i in idx], padding="longest", truncation=True,
                                     max_length=common.MAX_LENGTH, return_tensors="np")
      batches = engines.batches([[]] * n, order, batch)
    else:
      ids = tokenizer([PREFIX + t for t in texts], truncation=True, max_length=common.MAX_LENGTH)["input_ids"]
      encode = lambda idx: tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding="longest",
                                         return_tensors="np")
      batches = engines.batches(ids, order, batch)
    tokenize_seconds = time.perf_counter() - start
    if engine == "openvino-throughput":
      def done(request, idx):
        scores[idx] = request.get_output_tensor(0).data[:, 0]
      queue.set_callback(done)
    for idx in batches:
      t = time.perf_counter()
      enc = encode(idx)
      enc = {k: np.asarray(enc[k], np.int64) for k in ("input_ids", "attention_mask")}
      tokenize_seconds += time.perf_counter() - t
      if engine == "openvino-throughput":
        queue.start_async(enc, idx)
      else:
        scores[idx] = infer(enc)
      real += int(enc["attention_mask"].sum())
      computed += int(enc["attention_mask"].size)
    if engine == "openvino-throughput":
      queue.wait_all()
    seconds = time.perf_counter() - start
  return {"size": size, "engine": engine, "order": order, "batch": batch, "documents": n, "seconds": seconds,
          "load_seconds": load_seconds, "tokenize_seconds": tokenize_seconds, "real_tokens": real,
          "computed_tokens": computed, "threads": threads, "peak_rss_gib": common.peak_rss_gib(),
          "others_busy": busy.fraction, "when": time.strftime("%Y-%m-%d %H:%M"), **extra,
          "scores": scores.tolist()}


# ---------------------------------------------------------------------------- report

def figures(r: dict, limit: float | None) -> dict:
  """What every benchmark reports, from a result's counts."""
  flops = common.flops_per_token(r["size"])
  out = {"docs_per_s": r["documents"] / r["seconds"], "real_tokens_per_s": r["real_tokens"] / r["seconds"],
         "padding": 1 - r["real_tokens"] / r["computed_tokens"],
         "real_gflops": flops * r["real_tokens"] / r["seconds"] / 1e9,
         "computed_gflops": flops * r["computed_tokens"] / r["seconds"] / 1e9}
  out["of_limit"] = out["real_gflops"] / limit if limit else None
  return out


def limits() -> dict:
  matmul = common.load_results("matmul")
  return matmul["limit"] if matmul else {}


def int_scores(scores) -> np.ndarray:
  """round(clip(score, 0, 5)), halves to even: the pipeline's int_score."""
  return np.rint(np.clip(np.asarray(scores, np.float64), 0, 5)).astype(np.int64)


def agreement(r: dict, ref: dict | None) -> tuple[str, str]:
  """Max |score difference| and int_score agreement of `r` against `ref` (same documents)."""
  if ref is None or ref is r or len(ref["scores"]) != len(r["scores"]):
    return "-", "-"
  a, b = np.asarray(r["scores"], np.float64), np.asarray(ref["scores"], np.float64)
  return f"{np.abs(a - b).max():.1e}", f"{np.mean(int_scores(a) == int_scores(b)):.1%}"


def report(runs: list[dict], command: str) -> str:
  lim = limits()
  by_key = {_key(r): r for r in runs}
  rows = []
  for r in runs:
    f = figures(r, lim.get(r["size"]))
    ref = by_key.get((r["size"], *REFERENCE_KEY))
    diff, agree = agreement(r, ref)
    convert = (r.get("conversion") or {}).get("convert_seconds")
    engine = r.get("engine", "transformers")
    if ref is r:
      diff, agree = "(reference)", "(reference)"
    rows.append([r["size"], ENGINE_LABELS[engine], f"{r['order']}, {r.get('batch', BATCH)}", r["documents"],
                 f"{f['docs_per_s']:.2f}", f"{f['real_tokens_per_s']:.0f}", f"{f['padding']:.1%}",
                 f"{f['real_gflops']:.0f}", f"{f['of_limit']:.0%}" if f["of_limit"] else "-",
                 f"{f['computed_gflops']:.0f}", diff, agree, f"{r.get('tokenize_seconds', float('nan')):.1f}",
                 f"{r['load_seconds']:.1f}", f"{convert:.0f}" if convert else "-", f"{r['peak_rss_gib']:.2f}"])
  notes = []
  bf16 = [r for r in runs if r.get("engine") == "openvino-bf16"]
  for r in bf16:
    f32 = by_key.get((r["size"], "openvino-latency", r["order"], r["batch"]))
    diff, agree = agreement(r, f32)
    if f32:
      notes.append(f"{r['size']}: OpenVINO bf16 against OpenVINO f32: int_score equal on {agree} of "
                   f"{r['documents']} documents, max |score difference| {diff}.")
  ort = next((r for r in runs if r.get("engine") == "onnxruntime" and r.get("conversion")), None)
  if ort:
    fusions = ", ".join(f"{k} {v}" for k, v in ort["conversion"]["fusions"].items())
    notes.append(f"ONNX Runtime {ort['version']}: `optimize_model(model_type=\"bert\")` fused ({ort['size']}): "
                 f"{fusions}. No EmbedLayerNormalization: XLM-R computes position ids from the input "
                 "ids (cumsum of the non-padding mask), a pattern that fusion does not match.")
  ov = [r for r in runs if r.get("engine", "").startswith("openvino")]
  if ov:
    notes.append("OpenVINO " + ov[0]["version"].split("-")[0] + ", as compiled: " + "; ".join(
        f"{ENGINE_LABELS[r['engine']]} ({r['size']}): precision {r['inference_precision']}, "
        f"{r['inference_num_threads']} threads, {r['num_streams']} stream(s), {r['infer_requests']} request(s) "
        f"in flight, matmuls " + ", ".join(f"{k} x{v}" for k, v in sorted(r["matmul_precisions"].items()))
        for r in ov) + ".")
  when = sorted({r["when"] for r in runs if "when" in r})
  return "\n\n".join([
      common.provenance(runs, command) + (f" Rows measured at {', '.join(when)}." if len(when) > 1 else ""),
      f"Batches padded to the longest of the batch (sorted: by token count first), truncation "
      f"{common.MAX_LENGTH}, fp32 unless said, {runs[0]['threads']} threads for every engine. "
      f"Real-token GFLOP/s = {common.flops_per_token('base') / 1e6:.0f} MFLOP (base) or "
      f"{common.flops_per_token('large') / 1e6:.0f} MFLOP (large) per real token over the scoring time "
      "(bench/common.py `flops_per_token`); \"computed\" counts padding too. The clock includes "
      "tokenization (its share: tokenize s); load s is reading the model (and for OpenVINO compiling it "
      "for the CPU), convert s the one-off export (ONNX: torch.onnx.export + optimize_model; OpenVINO: "
      "convert_model from PyTorch), both outside the clock. |diff| and int_score: against transformers' "
      "fp32 scores, sorted batches of 32.",
      common.table(["model", "engine", "order, batch", "docs", "docs/s", "real tok/s", "padding", "real GFLOP/s",
                    "of limit", "computed GFLOP/s", "max abs diff", "int_score equal", "tokenize s", "load s",
                    "convert s", "peak RSS GiB"], rows),
      *notes])


def _store(row: dict, command: str, counts: dict) -> list[dict]:
  """The stored rows with `row` in place of its earlier measurement. Rows not rerun are kept,
  as long as they scored the same number of documents."""
  stored = common.load_results("reference") or {"runs": []}
  kept = [r for r in stored["runs"] if _key(r) != _key(row) and r["documents"] == counts.get(r["size"])]
  order = {(s, *v): i for i, (s, v) in enumerate((s, v) for s in ("base", "large") for v in VARIANTS)}
  runs = sorted([row] + kept, key=lambda r: order.get(_key(r), len(order)))
  common.save_results("reference", {"runs": runs, "command": command})
  return runs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--documents", type=int, default=768, help="documents for the base model")
  parser.add_argument("--large_documents", type=int, default=96, help="documents for the large model")
  parser.add_argument("--sizes", default="base,large")
  parser.add_argument("--engines", default="transformers,onnxruntime,openvino",
                      help="any of transformers, onnxruntime, openvino (all OpenVINO rows), one "
                           "OpenVINO row (openvino-latency, openvino-throughput, openvino-bf16) or one "
                           "row as engine:order:batch (transformers:arrival:32). Rows not run are kept "
                           "from the stored results.")
  parser.add_argument("--retries", type=int, default=1,
                      help="run a row again (up to this many times) when other processes took more than "
                           "twice KOEDU_BENCH_MAX_BUSY of the machine during it; the least disturbed run is kept")
  parser.add_argument("--threads", type=int, default=2, help="threads for every engine")
  parser.add_argument("--variant", help=argparse.SUPPRESS)  # size:engine:order:batch, in a child process
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.variant:
    size, engine, order, batch = args.variant.split(":")
    result = measure(size, engine, order, int(batch), args.documents if size == "base" else args.large_documents,
                     args.threads)
    with open(args.json, "w") as f:
      json.dump(result, f)
    return 0

  command = common.command_line()
  wanted = set(args.engines.split(","))
  rows_named = {f"{e}:{o}:{b}" for e, o, b in VARIANTS}
  unknown = wanted - {"transformers", "onnxruntime", "openvino", *ENGINE_LABELS, *rows_named}
  if unknown:
    parser.error(f"unknown engines: {', '.join(sorted(unknown))}")
  chosen = lambda engine, order, batch: (engine in wanted or f"{engine}:{order}:{batch}" in wanted
                                         or (engine.startswith("openvino") and "openvino" in wanted))
  disturbed = 2 * float(os.environ.get("KOEDU_BENCH_MAX_BUSY", "0.05"))
  runs = (common.load_results("reference") or {"runs": []})["runs"]
  for size in args.sizes.split(","):
    common.checkpoint(size)  # built once, outside any timing
    for engine, order, batch in VARIANTS:
      if not chosen(engine, order, batch):
        continue
      engines.ensure_converted(size, engine)
      attempts = []
      while not attempts or (attempts[-1]["others_busy"] > disturbed and len(attempts) <= args.retries):
        common.wait_until_quiet()
        attempts.append(common.run_variant("bench.reference", [
            "--documents", str(args.documents), "--large_documents", str(args.large_documents),
            "--threads", str(args.threads), "--variant", f"{size}:{engine}:{order}:{batch}"]))
        r = attempts[-1]
        common.log(f"{size} {engine} {order} {batch}: {r['documents'] / r['seconds']:.2f} docs/s "
                   f"(others busy {r['others_busy']:.1%})")
      # Stored after every row, so that a row failing later loses none measured before it.
      runs = _store(min(attempts, key=lambda r: r["others_busy"]), command,
                    {"base": args.documents, "large": args.large_documents})
  body = report(runs, command)
  print(body)
  common.update_doc("reference", body)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
