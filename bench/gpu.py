"""koedu on one GPU against transformers + PyTorch on the same GPU, weights and documents, and
the host path that has to feed it. One command, within 8 minutes on an H100:

    python -m bench.gpu [--out DIR] [--documents 8192] [--budget_s 360]
    python -m bench.gpu --smoke [--out DIR]       # CPU, tiny shapes, seconds (tests/bench)
    python -m bench.gpu --report DIR/gpu.json     # that run's section into docs/benchmarks.md

1. weights: a random XLM-R-large classifier (model/random_checkpoint.py, saved by transformers),
   its head rescaled so that fp32 scores spread over 0..5 as a trained classifier's do (else
   every int_score is equal and agreement proves nothing); documents: web-length Korean texts
   (bench/common.py: log-normal lengths, median 200 tokens, 15% truncated at 512).
2. koedu at float32 on the first --reference documents: the reference; transformers + PyTorch
   at float32 on them too (parity on this GPU).
3. koedu at bfloat16 with each attention for packed rows this platform offers (GPU: XLA's
   batched op with the segment mask, cuDNN's flash attention, the Pallas kernel): docs/s,
   real-token TFLOP/s (2 x weights per real token: padding and attention's own products not
   counted) and its fraction of the chip's dense bf16 peak, max |diff| and int_score agreement
   against the fp32 reference, compile seconds. A candidate that fails says why and the rest go on.
4. transformers + PyTorch bf16, SDPA, in length-sorted batches padded to their longest
   document (NeMo Curator's FineWebEduClassifier through CrossFit): the same figures, at a few
   batch sizes.
5. the host path with the device free: DocumentTokenizer and the runner's packing over chunks
   of documents on 1, 2, 4, 8 and 16 host threads (what one worker process can feed).
6. bf16's max |diff| to fp32 for the same weights and documents on this machine's CPU.
Stages are skipped, and said to be, when --budget_s would run out. The order: the reference,
koedu with XLA's attention, PyTorch, the host path, the other attentions, the CPU comparison.
Results: DIR/gpu.json and DIR/gpu.md (DIR: --out, else $OUT, else the bench directory).
"""
from __future__ import annotations

import os

# Before jax is imported: PyTorch shares the GPU with it.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

# Dense bf16 tensor-core peaks in TFLOP/s (NVIDIA's datasheets), by what a device's kind names;
# the more specific names first.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))
CANDIDATES = {"gpu": ("batched", "cudnn", "pallas"), "cpu": ("batched", "rows")}
# runner: RunnerConfig's fields (production's defaults when empty).
FULL = dict(size="large", runner={}, documents=8192, reference=1024, host_documents=32768, chunk=2048,
            threads=(1, 2, 4, 8, 16), torch_batches=(64, 128, 256), repeats=3, cpu_documents=8)
SMOKE = dict(size="tiny", runner=dict(max_length=64, tokens_per_device=256), documents=48, reference=48, host_documents=192, chunk=32,
             threads=(1, 2), torch_batches=(16,), repeats=1, cpu_documents=4)


def peak_tflops(device_kind: str) -> float | None:
  return next((peak for name, peak in PEAK_BF16_TFLOPS if name.lower() in device_kind.lower()), None)


class Budget:
  def __init__(self, seconds: float):
    self.end, self.skipped = time.monotonic() + seconds, []

  def allows(self, stage: str, needs: float) -> bool:
    left = self.end - time.monotonic()
    if left < needs:
      self.skipped.append(f"{stage} (needs about {needs:.0f} s, {left:.0f} s left)")
      common.log(f"skipping {stage}: {left:.0f} s left")
    return left >= needs


def median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict:
  from model.recipe import int_scores
  return {"max_abs_diff": float(np.max(np.abs(ours.astype(np.float64) - reference))),
          "int_score_agreement": float(np.mean(int_scores(ours) == int_scores(reference)))}


# ------------------------------------------------------------------------------ the weights

def build_checkpoint(out: str, size: str, device: str) -> str:
  """The random classifier, its head rescaled on `device` so that the fp32 scores of 256 other
  documents have mean 2 and standard deviation 1.2."""
  import torch
  from transformers import AutoModelForSequenceClassification

  from model import random_checkpoint
  from model.tokenize import DocumentTokenizer
  random_checkpoint.make(out + ".tmp", size, seed=0)
  ids = DocumentTokenizer(out + ".tmp", 512)(common.documents(256, seed=99)).ids
  model = AutoModelForSequenceClassification.from_pretrained(out + ".tmp", dtype=torch.float32).to(device).eval()
  scores = torch_scores(model, ids, device, batch=32)
  head = model.classifier.out_proj
  with torch.no_grad():
    head.weight *= 1.2 / scores.std()
    head.bias.copy_((head.bias - scores.mean()) * 1.2 / scores.std() + 2.0)
  model.save_pretrained(out + ".tmp")
  os.rename(out + ".tmp", out)
  return out


def torch_scores(model, ids: list[np.ndarray], device: str, batch: int, pad: int = 1) -> np.ndarray:
  """Scores in length-sorted batches, each padded to its longest document; one wait at the end."""
  import torch
  order = np.argsort([-len(d) for d in ids], kind="stable")
  outputs = []
  with torch.inference_mode():
    for start in range(0, len(ids), batch):
      index = order[start:start + batch]
      longest = len(ids[index[0]])
      x, mask = np.full((len(index), longest), pad, np.int64), np.zeros((len(index), longest), np.int64)
      for row, i in enumerate(index):
        x[row, :len(ids[i])], mask[row, :len(ids[i])] = ids[i], 1
      logits = model(input_ids=torch.from_numpy(x).to(device), attention_mask=torch.from_numpy(mask).to(device)).logits
      outputs.append((index, logits[:, 0].float()))
    out = np.empty(len(ids), np.float32)
    for index, logits in outputs:
      out[index] = logits.cpu().numpy()
  return out


# ------------------------------------------------------------------------------ the engines

def koedu(model_dir: str, ids, config, precision: str, attention: str, repeats: int, devices=None,
          keep: bool = False) -> dict:
  """One runner: compiled for the shapes these documents need (8 threads), run once untimed,
  then timed. Its figures and scores, and the runner itself if `keep`."""
  from model.runner import load_runner
  start = time.perf_counter()
  runner = load_runner(model_dir, config, precision=precision, attention=attention, devices=devices)
  load = time.perf_counter() - start
  shapes = {batch.shape for batch in runner.pack(ids)}
  compile_seconds = runner.warmup(shapes, threads=8)
  scores = runner.run(ids)
  seconds = median_seconds(lambda: runner.run(ids), repeats)
  stats = runner.stats
  result = {"precision": runner.runtime.precision, "attention": runner.runtime.attention,
            "platform": runner.runtime.platform, "load_seconds": load, "compile_seconds": compile_seconds,
            "shapes": sorted(shapes), "seconds": seconds,
            "padding_fraction": 1 - stats.real_tokens / stats.computed_tokens, "scores": scores}
  if keep:
    return {**result, "runner": runner}
  del runner
  gc.collect()
  return result


def torch_engine(model_dir: str, ids, dtype: str, device: str, batches, repeats: int) -> dict:
  import torch
  from transformers import AutoModelForSequenceClassification
  model = AutoModelForSequenceClassification.from_pretrained(
      model_dir, dtype=getattr(torch, dtype), attn_implementation="sdpa").to(device).eval()
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  runs = []
  for batch in batches:
    scores = torch_scores(model, ids, device, batch)  # untimed: kernels chosen, memory cached
    sync()
    runs.append({"batch": batch, "seconds": median_seconds(lambda: torch_scores(model, ids, device, batch), repeats),
                 "scores": scores})
  del model
  gc.collect()
  if device == "cuda":
    torch.cuda.empty_cache()
  return min(runs, key=lambda r: r["seconds"]) | {"batches": {r["batch"]: r["seconds"] for r in runs}}


def host_path(tokenizer, runner, texts: list[str], chunk: int, threads: int) -> dict:
  """What one worker process's host threads turn into batches per second, the device free: the
  product's tokenizer and the runner's packing, chunk by chunk as pipeline.run's host pool does."""
  def one(start: int) -> int:
    return len(runner.pack(tokenizer(texts[start:start + chunk]).ids))

  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    begin = time.perf_counter()
    batches = sum(pool.map(one, range(0, len(texts), chunk)))
    seconds = time.perf_counter() - begin
  return {"threads": threads, "documents": len(texts), "seconds": seconds, "batches": batches,
          "docs_per_s": len(texts) / seconds}


# ------------------------------------------------------------------------------ the run

def run(args, shape: dict) -> dict:
  import jax
  import torch

  from model.checkpoint import read_config
  from model.runner import RunnerConfig
  from model.tokenize import DocumentTokenizer
  config = RunnerConfig(**shape["runner"])
  budget = Budget(args.budget_s)
  platform = "gpu" if jax.default_backend() == "gpu" else "cpu"
  device = "cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu"
  kind = jax.devices()[0].device_kind
  out = {"device": kind, "platform": platform, "peak_bf16_tflops": peak_tflops(kind) if platform == "gpu" else None,
         "machine": common.machine(), "jax_devices": len(jax.devices()), "command": " ".join(sys.argv),
         "shape": shape}
  common.log(f"{kind}: {out['machine']['versions']}")
  texts = common.documents(shape["documents"], seed=0)
  model_dir = os.path.join(args.work, f"xlmr-{shape['size']}")
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    common.log(f"building the {shape['size']} checkpoint in {model_dir}")
    build_checkpoint(model_dir, shape["size"], device)
  cfg = read_config(model_dir)
  flops = 2.0 * cfg.num_hidden_layers * (4 * cfg.hidden_size ** 2 + 2 * cfg.hidden_size * cfg.intermediate_size)
  tokenized = DocumentTokenizer(model_dir, config.max_length)(texts)
  ids, reference = tokenized.ids, slice(0, shape["reference"])
  tokens = int(sum(len(d) for d in ids))
  out["documents"] = {**common.length_summary([len(d) for d in ids]), "truncated": float(tokenized.truncated.mean())}

  def rates(seconds: float) -> dict:
    tflops = tokens * flops / seconds / 1e12
    peak = out["peak_bf16_tflops"]
    return {"docs_per_s": len(ids) / seconds, "real_tflops": tflops, "of_peak": tflops / peak if peak else None}

  common.log("koedu float32: the reference")
  fp32 = koedu(model_dir, ids[reference], config, "float32", "batched", 1)
  ref = fp32.pop("scores").astype(np.float64)
  out["float32"] = fp32
  torch32 = torch_engine(model_dir, ids[reference], "float32", device, shape["torch_batches"][:1], 1)
  out["torch_float32_vs_koedu_float32"] = agreement(torch32["scores"], ref)
  common.log(f"torch fp32 vs koedu fp32: {out['torch_float32_vs_koedu_float32']}")

  out["koedu"], scores = {}, {}

  def candidate(attention: str, keep: bool = False):
    """koedu at bf16 with one attention; its runner if `keep` and it ran."""
    if not budget.allows(f"koedu bfloat16, {attention} attention", 90 if scores else 60):
      return None
    common.log(f"koedu bfloat16, {attention} attention")
    try:
      result = koedu(model_dir, ids, config, "bfloat16", attention, shape["repeats"], keep=keep)
    except Exception as err:  # a candidate this GPU or jax cannot run: say why, go on
      out["koedu"][attention] = {"error": f"{type(err).__name__}: {str(err)[:400]}"}
      common.log(f"  failed: {out['koedu'][attention]['error']}")
      return None
    runner, scores[attention] = result.pop("runner", None), result.pop("scores")
    out["koedu"][attention] = {**result, **rates(result["seconds"]), **agreement(scores[attention][reference], ref)}
    if attention != "batched" and "batched" in scores:
      out["koedu"][attention]["max_abs_diff_to_batched"] = float(np.max(np.abs(scores[attention] - scores["batched"])))
    common.log(f"  {out['koedu'][attention]}")
    return runner

  # What the goals need first: koedu as it runs today, PyTorch, the host path; then the other
  # attention candidates, then the CPU comparison.
  first, *others = CANDIDATES[platform]
  packer = candidate(first, keep=True)  # its runner packs for the host path below

  if budget.allows("transformers + PyTorch bfloat16", 45):
    common.log("transformers + PyTorch bfloat16, SDPA, length-sorted batches")
    result = torch_engine(model_dir, ids, "bfloat16", device, shape["torch_batches"], shape["repeats"])
    torch_scores_ = result.pop("scores")
    out["torch_bfloat16"] = {**result, **rates(result["seconds"]), **agreement(torch_scores_[reference], ref)}
    common.log(f"  {out['torch_bfloat16']}")

  if packer is not None and budget.allows("host path", 30):
    tokenizer = DocumentTokenizer(model_dir, packer.config.max_length).load()
    host_texts = (texts * (shape["host_documents"] // len(texts) + 1))[:shape["host_documents"]]
    out["host"] = []
    for threads in shape["threads"]:
      out["host"].append(host_path(tokenizer, packer, host_texts, shape["chunk"], threads))
      common.log(f"  host path: {out['host'][-1]}")
  del packer
  gc.collect()
  for attention in others:
    candidate(attention)

  cpu_docs = slice(0, shape["cpu_documents"])
  if "batched" in scores and budget.allows("bf16 vs fp32 on CPU", 90):
    common.log("bf16 and fp32 on this machine's CPU, the same weights and documents")
    cpu = jax.devices("cpu")[:1]
    # XLA's batched attention, as the device ran it: the chip is the only difference.
    cpu32 = koedu(model_dir, ids[cpu_docs], config, "float32", "batched", 1, devices=cpu)["scores"]
    cpu16 = koedu(model_dir, ids[cpu_docs], config, "bfloat16", "batched", 1, devices=cpu)["scores"]
    out["bf16_vs_fp32_same_documents"] = {
        "documents": shape["cpu_documents"], "cpu": agreement(cpu16, cpu32.astype(np.float64)),
        "device": agreement(scores["batched"][cpu_docs], ref[cpu_docs])}
  out["skipped"] = budget.skipped
  return out


# ------------------------------------------------------------------------------ the report

def report(r: dict) -> str:
  def fmt(x, spec):
    return "-" if x is None else format(x, spec)

  rows = []
  for attention, k in r["koedu"].items():
    if "error" in k:
      rows.append([f"koedu bf16, {attention} attention", "failed: " + k["error"][:120], "", "", "", "", ""])
      continue
    rows.append([f"koedu bf16, {attention} attention", f"{k['docs_per_s']:.0f}", f"{k['real_tflops']:.3g}",
                 fmt(k["of_peak"], ".0%"), f"{k['max_abs_diff']:.3g}", f"{k['int_score_agreement']:.2%}",
                 f"{k['compile_seconds']:.0f} s, {len(k['shapes'])} shapes"])
  t = r.get("torch_bfloat16")
  if t:
    rows.append([f"transformers + PyTorch bf16 SDPA, sorted, batch {t['batch']}", f"{t['docs_per_s']:.0f}",
                 f"{t['real_tflops']:.3g}", fmt(t["of_peak"], ".0%"), f"{t['max_abs_diff']:.3g}",
                 f"{t['int_score_agreement']:.2%}", ", ".join(f"{b}: {s:.2f} s" for b, s in t["batches"].items())])
  best = max((k for k in r["koedu"].values() if "docs_per_s" in k), key=lambda k: k["docs_per_s"], default=None)
  parts = [
      f"Command: `{r['command']}` on {r['device']} ({r['jax_devices']} device(s); peak dense bf16 "
      f"{fmt(r['peak_bf16_tflops'], '.0f')} TFLOP/s); versions {r['machine']['versions']}, "
      f"{r['machine']['cores']} cores. {r['documents']['documents']} documents of "
      f"{r['documents']['mean']:.0f} tokens on average (p50 {r['documents']['p50']}, p90 {r['documents']['p90']}, "
      f"{r['documents']['truncated']:.0%} truncated), XLM-R-{r['shape']['size']}-shaped random weights; "
      f"agreement against koedu float32 on the first {r['shape']['reference']} documents "
      f"(transformers + PyTorch float32 against it: max |diff| "
      f"{r['torch_float32_vs_koedu_float32']['max_abs_diff']:.3g}).",
      common.table(["engine", "docs/s", "real-token TFLOP/s", "of bf16 peak", "max |diff| to fp32",
                    "int_score agreement", "notes"], rows)]
  if best and t:
    parts.append(f"koedu's best over PyTorch: **{best['docs_per_s'] / t['docs_per_s']:.2f}x**.")
  if r.get("host"):
    parts.append(common.table(["host threads", "docs/s (tokenizer + packing, device free)", "of the device's best"],
                              [[h["threads"], f"{h['docs_per_s']:.0f}",
                                fmt(h["docs_per_s"] / best["docs_per_s"] if best else None, ".2f")]
                               for h in r["host"]]))
  same = r.get("bf16_vs_fp32_same_documents")
  if same:
    parts.append(f"bf16 against fp32 on the same {same['documents']} documents and weights: max |diff| "
                 f"{same['cpu']['max_abs_diff']:.3g} on CPU, {same['device']['max_abs_diff']:.3g} on {r['device']}.")
  if r["skipped"]:
    parts.append("Skipped for time: " + "; ".join(r["skipped"]) + ".")
  return "\n\n".join(parts)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, seconds: the suite runs it")
  parser.add_argument("--documents", type=int, help="documents scored (default 8192; smoke 48)")
  parser.add_argument("--budget_s", type=float, default=360, help="stages that would end past this are skipped")
  parser.add_argument("--out", default=os.environ.get("OUT") or common.RESULTS, help="where gpu.json and gpu.md go")
  parser.add_argument("--work", default=os.path.join(common.BENCH_DIR, "gpu"), help="where the checkpoint is built")
  parser.add_argument("--report", help="a gpu.json: write its section into docs/benchmarks.md and stop")
  args = parser.parse_args(argv)
  if args.report:
    with open(args.report) as f:
      r = json.load(f)
    common.update_doc("gpu", report(r))
    return 0
  shape = dict(SMOKE if args.smoke else FULL)
  if args.documents:
    shape["documents"] = args.documents
    shape["reference"] = min(shape["reference"], args.documents)
  os.makedirs(args.out, exist_ok=True)
  os.makedirs(args.work, exist_ok=True)
  result = run(args, shape)
  with open(os.path.join(args.out, "gpu.json"), "w") as f:
    json.dump(result, f, indent=1, default=str)
  text = report(result)
  with open(os.path.join(args.out, "gpu.md"), "w") as f:
    f.write(text + "\n")
  print(text)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
