"""How people score today: transformers + PyTorch, batches of 32 padded to the longest.

    python -m bench.reference [--documents 768] [--large_documents 96]

Two orders, each in its own process: documents as they arrive (fineweb-edu's classifier script:
`tokenizer(texts, padding="longest", truncation=True)` per batch), and sorted by token count
first (NeMo Curator's way, which pads far less). Same random checkpoint, same documents, the
same "passage: " prefix and 512-token truncation as koedu; fp32, every core, eval mode,
`torch.inference_mode`, transformers' default attention (SDPA). The clock runs from the first
tokenization to the last score; loading the model is reported apart.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench import common

BATCH = 32
PREFIX = "passage: "


def measure(size: str, order: str, n: int) -> dict:
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer

  texts = common.documents(n)
  start = time.perf_counter()
  model_dir = common.checkpoint(size)
  tokenizer = AutoTokenizer.from_pretrained(model_dir)
  model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
  load_seconds = time.perf_counter() - start

  scores = np.empty(n, np.float32)
  real = computed = 0
  with common.Interference().measure() as busy, torch.inference_mode():
    start = time.perf_counter()
    if order == "arrival":
      batches = [list(range(i, min(n, i + BATCH))) for i in range(0, n, BATCH)]
      encode = lambda idx: tokenizer([PREFIX + texts[i] for i in idx], padding="longest", truncation=True,
                                     max_length=common.MAX_LENGTH, return_tensors="pt")
    else:
      ids = tokenizer([PREFIX + t for t in texts], truncation=True, max_length=common.MAX_LENGTH)["input_ids"]
      by_length = np.argsort([len(x) for x in ids], kind="stable")
      batches = [by_length[i:i + BATCH].tolist() for i in range(0, n, BATCH)]
      encode = lambda idx: tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding="longest",
                                         return_tensors="pt")
    for idx in batches:
      enc = encode(idx)
      scores[idx] = model(**enc).logits[:, 0].float().numpy()
      real += int(enc["attention_mask"].sum())
      computed += int(enc["attention_mask"].numel())
    seconds = time.perf_counter() - start
  return {"size": size, "order": order, "documents": n, "seconds": seconds, "load_seconds": load_seconds,
          "real_tokens": real, "computed_tokens": computed, "threads": torch.get_num_threads(),
          "attention": model.config._attn_implementation, "peak_rss_gib": common.peak_rss_gib(),
          "others_busy": busy.fraction, "scores": scores.tolist()}


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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--documents", type=int, default=768, help="documents for the base model")
  parser.add_argument("--large_documents", type=int, default=96, help="documents for the large model")
  parser.add_argument("--sizes", default="base,large")
  parser.add_argument("--variant", help=argparse.SUPPRESS)  # size:order, in a child process
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.variant:
    size, order = args.variant.split(":")
    result = measure(size, order, args.documents if size == "base" else args.large_documents)
    with open(args.json, "w") as f:
      json.dump(result, f)
    return 0

  command = common.command_line()
  runs = []
  for size in args.sizes.split(","):
    common.checkpoint(size)  # built once, outside any timing
    for order in ("arrival", "sorted"):
      common.wait_until_quiet()
      runs.append(common.run_variant("bench.reference", ["--documents", str(args.documents), "--large_documents",
                                                         str(args.large_documents), "--variant", f"{size}:{order}"]))
  common.save_results("reference", {"runs": runs, "command": command})
  lim = limits()
  rows = []
  for r in runs:
    f = figures(r, lim.get(r["size"]))
    rows.append([r["size"], r["order"], r["documents"], f"{f['docs_per_s']:.2f}", f"{f['real_tokens_per_s']:.0f}",
                 f"{f['padding']:.1%}", f"{f['real_gflops']:.0f}",
                 f"{f['of_limit']:.0%}" if f["of_limit"] else "-", f"{f['computed_gflops']:.0f}",
                 f"{r['load_seconds']:.1f}", f"{r['peak_rss_gib']:.2f}"])
    common.log(" ".join(map(str, rows[-1])))
  body = "\n\n".join([
      common.provenance(runs, command),
      f"Batches of {BATCH}, padded to the longest of the batch, truncation {common.MAX_LENGTH}, fp32, "
      f"{runs[0]['threads']} threads, attention `{runs[0]['attention']}`. Real-token GFLOP/s = "
      f"{common.flops_per_token('base') / 1e6:.0f} MFLOP (base) or {common.flops_per_token('large') / 1e6:.0f} "
      "MFLOP (large) per real token over the scoring time (bench/common.py `flops_per_token`); "
      "\"computed\" counts padding too. No compilation here.",
      common.table(["model", "order", "docs", "docs/s", "real tok/s", "padding", "real GFLOP/s",
                    "of limit", "computed GFLOP/s", "load s", "peak RSS GiB"], rows)])
  common.update_doc("reference", body)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
