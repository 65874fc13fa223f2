"""The seed-like stand-in (`python -m bench.standin --seedlike`, whose docstring says what it
is): the trained stand-in's encoder frozen, a head fit on its features at 512 tokens, scored in
fp32 and one bf16 pass rounded as a TPU rounds, and the flips that predicts for the seed."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bench import common
from bench.standin import OUT, corpus, write_jsonl

# Half-width around each x.5 in which the density of scores is counted: near the errors' scale
# (1e-4 to 1e-3), where flips happen, yet wide enough to hold documents of a spread classifier.
BOUNDARY_BAND = 0.01
EXACT_BF16 = {"XLA_FLAGS": "--xla_allow_excess_precision=false", "JAX_PLATFORMS": "cpu"}
# Predicted int_score per class by the seed's card (column sums of its confusion matrix over
# 4096 documents): spread evenly within each class, the density at boundary k + 0.5 is the
# mean of classes k and k + 1 per unit of score.
SEED_PREDICTED = [100, 1311, 1729, 865, 91, 0]


def seed_density() -> float:
  share = np.asarray(SEED_PREDICTED, np.float64) / sum(SEED_PREDICTED)
  return float(sum((share[k] + share[k + 1]) / 2 for k in range(5)))


def boundary_density(scores: np.ndarray, band: float = BOUNDARY_BAND) -> float:
  """Documents per unit of score within `band` of a rounding boundary (0.5 .. 4.5), as a share
  of all: the expected share of flips is this times the mean absolute error."""
  distance = np.abs(scores - (np.clip(np.floor(scores), 0, 4) + 0.5))
  return float(np.mean(distance < band) / (2 * band))


def encoder_at(source: str, max_length: int) -> str:
  """The trained stand-in's encoder without its head, positions tiled out to `max_length`."""
  from safetensors.numpy import save_file

  from model import checkpoint
  out = os.path.join(OUT, f"encoder-{max_length}")
  weights = os.stat(os.path.join(source, "model.safetensors"))
  # Made from this source as it is now: a stand-in trained again since must not meet the old one.
  made_from = {"source": os.path.abspath(source), "size": weights.st_size, "mtime_ns": weights.st_mtime_ns}
  stamp = os.path.join(out, "made_from.json")
  if os.path.exists(stamp) and json.load(open(stamp)) == made_from:
    return out
  shutil.rmtree(out, ignore_errors=True)
  shutil.rmtree(out + ".tmp", ignore_errors=True)
  state = {k: v for k, v in checkpoint.read_hf_state(source).items() if not k.startswith("classifier.")}
  name = next(k for k in state if k.endswith("position_embeddings.weight"))
  trained = state[name]
  offset = 2  # RoBERTa's positions start after the padding index
  rows = max_length + offset
  body = trained[offset:]
  tiled = np.concatenate([body] * math.ceil((rows - offset) / len(body)))[:rows - offset]
  state[name] = np.concatenate([trained[:offset], tiled]).astype(np.float32)
  os.makedirs(out + ".tmp", exist_ok=True)
  save_file(state, os.path.join(out + ".tmp", "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(source, "config.json")) as f:
    config = json.load(f)
  config.update(max_position_embeddings=rows, architectures=["XLMRobertaModel"])
  with open(os.path.join(out + ".tmp", "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  for name in os.listdir(source):
    if name.startswith(("tokenizer", "special_tokens", "sentencepiece")):
      shutil.copy(os.path.join(source, name), out + ".tmp")
  with open(os.path.join(out + ".tmp", "made_from.json"), "w") as f:
    json.dump(made_from, f)
  os.rename(out + ".tmp", out)
  return out


def seedlike(args) -> dict:
  """The frozen-encoder stand-in at `max_length`: trained, scored in fp32 and one bf16 pass."""
  os.makedirs(OUT, exist_ok=True)
  encoder = encoder_at(args.from_model, args.max_length)
  data, held_out = os.path.join(OUT, "seedlike-train.jsonl"), os.path.join(OUT, "seedlike-eval.jsonl")
  write_jsonl(data, corpus(args.train_documents, seed=11))
  write_jsonl(held_out, corpus(args.eval_documents, seed=12))
  model = os.path.join(OUT, "seedlike")
  shutil.rmtree(model, ignore_errors=True)  # each run fits its head anew, on this encoder
  cmd = [sys.executable, "-m", "train.run", "--data", data, "--eval_data", held_out, "--output", model,
         "--model", encoder, "--max_length", str(args.max_length), "--row_lengths", args.row_lengths,
         "--batch_size", str(args.batch_size), "--epochs", str(args.epochs), "--score_dtype", "float32",
         "--seed", "0"]
  common.log("$ " + " ".join(cmd))
  start = time.perf_counter()
  subprocess.run(cmd, check=True, cwd=common.REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  with open(os.path.join(model, "train_summary.json")) as f:
    summary = json.load(f)
  summary["seconds"] = time.perf_counter() - start
  summary["command"] = " ".join(["python", "-m", "train.run", *cmd[3:]])
  texts_path = os.path.join(OUT, "seedlike-score.jsonl")
  write_jsonl(texts_path, corpus(args.score_documents, seed=13))
  runs = {setting: common.run_variant("bench.standin", [
      "--variant", setting, "--model", model, "--texts", texts_path, "--max_length", str(args.max_length),
      "--row_lengths", args.row_lengths], EXACT_BF16) for setting in ("float32", "bfloat16")}
  return {"summary": summary, "runs": runs}


def seedlike_table(result: dict) -> tuple[list, dict]:
  ref = np.asarray(result["runs"]["float32"]["scores"], np.float64)
  other = np.asarray(result["runs"]["bfloat16"]["scores"], np.float64)
  error = np.abs(other - ref)
  changed = int(np.sum(np.asarray(result["runs"]["bfloat16"]["int_scores"]) !=
                       np.asarray(result["runs"]["float32"]["int_scores"])))
  density, seed = boundary_density(ref), seed_density()
  mean = float(error.mean())
  numbers = {"documents": len(ref), "changed": changed, "agreement": 1 - changed / len(ref),
             "mean_error": mean, "max_error": float(error.max()), "density": density,
             "seed_density": seed, "predicted": density * mean, "seed_predicted": seed * mean,
             # How many times larger the mean error may grow before the seed's predicted flips
             # reach 0.5%: the margin a 24-layer model's larger rounding has to stay within.
             "margin": 0.005 / (seed * mean) if mean else None}
  rows = [["stand-in", f"{numbers['agreement']:.2%} ({changed} of {len(ref)} differ)", f"{mean:.2g}",
           f"{numbers['max_error']:.2g}", f"{density:.2f}", f"{numbers['predicted']:.3%}"],
          ["seed (density from its card, the stand-in's error)", "", "", "", f"{seed:.2f}",
           f"{numbers['seed_predicted']:.3%}"]]
  return rows, numbers


def seedlike_report(result: dict) -> str:
  rows, n = seedlike_table(result)
  s, args = result["summary"], result["args"]
  best = s["best"]
  default = "bfloat16" if n["margin"] and n["margin"] >= 10 else "bfloat16_3x"
  tokens = np.asarray(result["runs"]["float32"]["num_tokens"])
  return "\n\n".join([
      f"Command: `{result['command']}` (from the repository root), {result['when']}; the encoder from "
      f"`{args['from_model']}`. Training: `{s['command']}`, {s['seconds'] / 60:.0f} min on this shared "
      f"2-core CPU. Held-out against the teacher: accuracy {best['accuracy']:.2f}, macro F1 "
      f"{best['macro_f1']:.2f}, MSE {best['mse']:.3f}.",
      f"fp32 scores: mean {np.mean(result['runs']['float32']['scores']):.3f}, std "
      f"{np.std(result['runs']['float32']['scores']):.4f}. "
      f"Scored: {n['documents']} documents (tokens median {int(np.median(tokens))}, p90 "
      f"{int(np.percentile(tokens, 90))}, {np.mean(tokens >= args['max_length']):.0%} truncated at "
      f"{args['max_length']}), float32 and bfloat16 each in a fresh process with "
      f"`XLA_FLAGS=--xla_allow_excess_precision=false`, attention `batched` as TPUs run it. Density: "
      f"documents per unit of score within {BOUNDARY_BAND} of x.5; predicted flips = density x mean "
      f"|bf16 - fp32|.",
      common.table(["model", "int_score = fp32's", "mean abs diff", "max abs diff", "boundary density",
                    "predicted flips"], rows),
      f"At the seed's density, one bf16 pass is predicted to change {n['seed_predicted']:.3%} of "
      f"int_scores; its mean error would have to grow {n['margin']:.1f}x to reach 0.5%. "
      f"Default this supports on TPUs: `{default}` (one pass is kept when that margin is 10x or more)."])
