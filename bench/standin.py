"""A trained stand-in classifier, and how far bf16 scoring keeps its int_scores.

    python -m bench.standin [--train_documents 3072] [--epochs 3] [--max_length 128] ...

The TPU default precision decides a 3x cost, and the real KoE5 classifier is not reachable
offline. The random benchmark checkpoint (bench/common.py) cannot decide it either: its head is
scaled 54x to spread its scores, which scales every rounding error alike. So this builds what a
trained classifier is, at base width, on this CPU:

1. A Korean corpus whose documents mix four registers (study material, news, shopping pages,
   chat) in random proportions, with bench/common.py's log-normal lengths.
2. A teacher that labels each document 0-5 from its text statistics (the share of each
   register's words, and length), the way an LLM annotator rewards educational content. The
   labelling is a function of the text, so a model can learn it.
3. A base-width encoder (12 layers, hidden 768, bench's small tokenizer), trained from random
   weights with `python -m train.run --no_freeze_encoder` (dropout on, as a full fine-tune
   trains) until its scores spread over 0-5 by themselves: nothing rescales the head.
4. Held-out documents scored through `model.text_scorer.load_text_scorer`, the pipeline's own
   path, in float32, bfloat16 and bfloat16_3x (each in a fresh process), with the batched
   attention TPUs run: int_score agreement with float32 and the score differences.

Results go to the bench directory and the "standin" section of docs/benchmarks.md.

    python -m bench.standin --seedlike [--from_model DIR] [--train_documents 400] ...

The seed is not that: it is a head fit on a frozen pretrained 24-layer encoder at 512 tokens.
`--seedlike` builds the nearer stand-in: the trained stand-in's encoder (its head dropped, its
128 trained positions tiled to 512 as Longformer extended RoBERTa's), frozen, with a fresh
head fit by `train.run`'s default recipe on its features at 512 tokens; then held-out
documents scored in float32 and bfloat16 with XLA's excess precision off
(`--xla_allow_excess_precision=false`: CPU rounds every bf16 value as a TPU does, instead of
keeping fp32 between fused ops). Beside agreement it measures the density of fp32 scores
near the rounding boundaries (x.5) and predicts flips as density x mean |bf16 - fp32|: a
score at distance d from a boundary flips when the error crosses it the other way, so the
expected share is the integral of the density times P(|e| > d) on each side. The same
prediction for the seed uses the density its model card's confusion matrix implies.
Results go to the "standin seedlike" section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from bench import common

OUT = os.path.join(common.BENCH_DIR, "standin")
SETTINGS = ("float32", "bfloat16", "bfloat16_3x")

# Words of model/random_checkpoint.py's list (the benchmark tokenizer knows them), by register.
REGISTERS = {
    "study": "광합성 식물 햇빛 에너지 이산화탄소 포도당 산소 세포 엽록체 역사 조선 세종대왕 한글 백성 문자 "
             "창제 수학 방정식 함수 그래프 기울기 삼각형 넓이 공식 선생님 수업 시험 공부 문법 주어 서술어 "
             "조사 어미".split(),
    "news": "경제 시장 가격 수요 공급 물가 정부 정책 뉴스 기자 발표 오늘 내일 어제 서울 부산 날씨 비 눈 학생 학교".split(),
    "shop": "할인 특가 무료 배송 이벤트 쿠폰 구매 상품 최저가 회원 가입 로그인 비밀번호 약관 개인정보 쿠키 "
            "저작권 게시판 댓글".split(),
    "chat": "ㅋㅋ ㅎㅎ 진짜 대박 그냥 근데".split(),
}
FUNCTION_WORDS = ("물 저는 우리는 그리고 하지만 따라서 예를 들어 이다 있다 없다 합니다 했습니다 입니다 됩니다 "
                  "하는 하고 해서 에서 으로 에게 까지 부터 보다 처럼").split()
FUNCTION_SHARE = 0.35  # of a document's words: grammar, whatever the register
# What the teacher gives a document made only of each register's words.
REGISTER_SCORES = {"study": 4.6, "news": 2.2, "shop": 0.6, "chat": 0.2}


# ---------------------------------------------------------------------------- corpus and teacher

def corpus(n: int, seed: int) -> list[str]:
  """`n` documents: register proportions from a Dirichlet(0.4) (most pages are mostly one
  register), lengths from bench/common.py's web-like distribution."""
  rng = np.random.default_rng(seed)
  names = list(REGISTERS)
  texts = []
  for tokens in common.target_lengths(n, seed):
    words = max(2, int(round((tokens - 5) / 1.2)))
    mix = rng.dirichlet([0.4] * len(names))
    register = rng.choice(len(names), size=words, p=mix)
    function = rng.random(words) < FUNCTION_SHARE
    out = [FUNCTION_WORDS[rng.integers(len(FUNCTION_WORDS))] if function[i] else
           REGISTERS[names[register[i]]][rng.integers(len(REGISTERS[names[register[i]]]))]
           for i in range(words)]
    texts.append(" ".join(out))
  return texts


def teacher(text: str) -> float:
  """0-5 from text statistics: the register mix of the content words, a little more for a
  longer text (a full article over a snippet) up to about what 128 tokens hold, so that the
  truncated text the model reads decides the label, and less for chat-heavy text."""
  counts = {name: 0 for name in REGISTERS}
  owner = {w: name for name, words in REGISTERS.items() for w in words}
  words = text.split(" ")
  for w in words:
    if w in owner:
      counts[owner[w]] += 1
  content = max(1, sum(counts.values()))
  share = {name: c / content for name, c in counts.items()}
  score = sum(REGISTER_SCORES[name] * share[name] for name in REGISTERS)
  score += 0.3 * math.log2(min(max(len(words), 8), 96) / 48) - 1.0 * share["chat"] ** 2
  return float(np.clip(score, 0, 5))


def write_jsonl(path: str, texts: list[str]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for text in texts:
      f.write(json.dumps({"text": text, "score": round(teacher(text), 4)}, ensure_ascii=False) + "\n")


def base_checkpoint(max_length: int) -> str:
  """Encoder-only, random, base width, positions for `max_length` tokens: what train.run puts a
  fresh head on, as on nlpai-lab/KoE5."""
  out = os.path.join(OUT, f"base-{max_length}")
  if not os.path.exists(os.path.join(out, "config.json")):
    from model.random_checkpoint import save_checkpoint
    save_checkpoint(out + ".tmp", **common.SIZES["base"], max_position_embeddings=max_length + 2,
                    tokenizer_dir=common.tokenizer_dir(), initializer_range=0.02, seed=0,
                    encoder_only=True)
    os.rename(out + ".tmp", out)
  return out


# ---------------------------------------------------------------------------- training

def train(args) -> tuple[str, dict]:
  """Runs train.run (resuming if interrupted); returns the model directory and its summary."""
  os.makedirs(OUT, exist_ok=True)
  data, held_out = os.path.join(OUT, "train.jsonl"), os.path.join(OUT, "eval.jsonl")
  write_jsonl(data, corpus(args.train_documents, seed=1))
  write_jsonl(held_out, corpus(args.eval_documents, seed=2))
  model = os.path.join(OUT, args.label)
  cmd = [sys.executable, "-m", "train.run", "--data", data, "--eval_data", held_out, "--output", model,
         "--model", base_checkpoint(args.max_length), "--no_freeze_encoder",
         "--max_length", str(args.max_length), "--row_lengths", args.row_lengths,
         "--batch_size", str(args.batch_size), "--epochs", str(args.epochs),
         "--checkpoint_every", "25", "--log_every", "10", "--seed", "0"]
  if args.learning_rate:
    cmd += ["--learning_rate", str(args.learning_rate)]
  common.log("$ " + " ".join(cmd))
  start = time.perf_counter()
  subprocess.run(cmd, check=True, cwd=common.REPO)
  with open(os.path.join(model, "train_summary.json")) as f:
    summary = json.load(f)
  summary["wall_seconds_this_call"] = time.perf_counter() - start
  summary["command"] = " ".join(["python", "-m", "train.run", *cmd[3:]])
  return model, summary


# ---------------------------------------------------------------------------- scoring

def score(model: str, precision: str, texts_path: str, max_length: int, row_lengths,
          attention: str = "batched") -> dict:
  """One setting, in this process: the pipeline's TextScorer with TPUs' batched attention, or
  `attention="auto"`: what a CPU worker runs (fused kernels, AMX matmuls under bfloat16)."""
  from model.runner import RunnerConfig
  from model.text_scorer import enable_compilation_cache, load_text_scorer
  enable_compilation_cache("none")
  with open(texts_path, encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in f]
  scorer = load_text_scorer(model, RunnerConfig(max_length=max_length, row_lengths=row_lengths),
                            precision=precision, attention=attention)
  start = time.perf_counter()
  scores = scorer.score(texts)
  return {"precision": scorer.runner.runtime.precision, "attention": scorer.runner.runtime.attention,
          "matmul": scorer.runner.runtime.matmul,
          "seconds": time.perf_counter() - start, "scores": scores.score.tolist(),
          "int_scores": scores.int_score.tolist(), "num_tokens": scores.num_tokens.tolist()}


def compare(runs: dict) -> list[dict]:
  ref = np.asarray(runs["float32"]["scores"], np.float64)
  ref_int = np.asarray(runs["float32"]["int_scores"])
  out = []
  for setting in [s for s in SETTINGS[1:] if s in runs]:
    other = np.asarray(runs[setting]["scores"], np.float64)
    diff = np.abs(other - ref)
    changed = np.flatnonzero(np.asarray(runs[setting]["int_scores"]) != ref_int)
    out.append({"setting": setting, "agreement": 1 - len(changed) / len(ref),
                "changed": int(len(changed)), "max_diff": float(diff.max()), "mean_diff": float(diff.mean()),
                "p99_diff": float(np.percentile(diff, 99)), "headroom": headroom(ref, other),
                # How near a rounding boundary (x.5) the documents that changed were in fp32.
                "changed_boundary_distance": [float(abs(ref[i] - np.floor(ref[i]) - 0.5)) for i in changed[:20]],
                "seconds": runs[setting]["seconds"]})
  return out


def headroom(ref: np.ndarray, other: np.ndarray, floor: float = 0.995) -> float | None:
  """How many times larger every document's difference from fp32 would have to be for
  int_score agreement to fall below `floor`: how far this classifier is from the line, which a
  larger model's larger rounding would have to cross."""
  ref_int = np.rint(np.clip(ref, 0, 5))
  for scale in np.geomspace(1, 1000, 61):
    if np.mean(np.rint(np.clip(ref + scale * (other - ref), 0, 5)) == ref_int) < floor:
      return float(scale)
  return None


# ---------------------------------------------------------------------------- report

def report(result: dict) -> str:
  s = result["summary"]
  ref = np.asarray(result["runs"]["float32"]["scores"])
  ref_int = np.asarray(result["runs"]["float32"]["int_scores"])
  labels = np.asarray(result["labels"])
  hist = np.bincount(ref_int, minlength=6)
  label_hist = np.bincount(np.rint(np.clip(labels, 0, 5)).astype(int), minlength=6)
  best = s["best"]
  losses = ", ".join(f"{h['train_loss']:.3f}" for h in s["history"])
  rows = [[r["setting"], f"{r['agreement']:.2%} ({r['changed']} of {len(ref)} differ)",
           f"{r['max_diff']:.2g}", f"{r['mean_diff']:.2g}", f"{r['p99_diff']:.2g}",
           f"{r['headroom']:.0f}x" if r.get("headroom") else "> 1000x"] for r in result["compare"]]
  rt = result["runs"]["float32"]
  tokens = np.asarray(rt["num_tokens"])
  return "\n\n".join([
      f"Command: `{result['command']}` (from the repository root), {result['when']}. "
      f"Training: `{s['command']}`, {s['seconds'] / 60:.0f} min on this 2-core CPU "
      f"({result['args']['train_documents']} documents, {result['args']['epochs']} epochs, "
      f"batch {result['args']['batch_size']}, max_length {result['args']['max_length']}).",
      f"The stand-in after training (best epoch {best['epoch']} of {len(s['history'])}, held-out "
      f"{s['data']['eval']} documents against the teacher): accuracy {best['accuracy']:.2f}, macro F1 "
      f"{best['macro_f1']:.2f}, binary F1 {best['binary_f1']:.2f}, MSE {best['mse']:.3f}. Train loss by "
      f"epoch: {losses}.",
      f"Scored held-out documents: {len(ref)} (tokens p10 {int(np.percentile(tokens, 10))}, median "
      f"{int(np.median(tokens))}, p90 {int(np.percentile(tokens, 90))}, "
      f"{np.mean(tokens >= result['args']['max_length']):.0%} truncated at {result['args']['max_length']}). "
      f"fp32 scores: mean {ref.mean():.2f}, std {ref.std():.2f}, min {ref.min():.2f}, max {ref.max():.2f}; "
      f"int_score histogram 0-5 {hist.tolist()} (the teacher's labels: {label_hist.tolist()}). "
      f"Attention `{rt['attention']}` in every setting, as "
      + ("TPUs run it." if rt["attention"] == "batched" else "CPU workers run it; weight matmuls: " + ", ".join(
          f"{name} {run.get('matmul') or 'XLA'}" for name, run in result["runs"].items()) + "."),
      common.table(["setting", "int_score = fp32's", "max abs diff", "mean abs diff", "p99 abs diff",
                    "differences x this fall below 99.5%"], rows)])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--train_documents", type=int, default=3072)
  parser.add_argument("--eval_documents", type=int, default=512, help="train.run's held-out set")
  parser.add_argument("--score_documents", type=int, default=2048, help="held-out documents scored 3 ways")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--learning_rate", type=float, default=None, help="default: train.run's")
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--row_lengths", default="64,128")
  parser.add_argument("--label", default="standin")
  parser.add_argument("--seedlike", action="store_true",
                      help="the frozen-encoder stand-in at --max_length (see above)")
  parser.add_argument("--from_model", default=os.path.join(OUT, "standin"),
                      help="with --seedlike: the trained stand-in whose encoder is frozen")
  parser.add_argument("--no_doc", action="store_true")
  parser.add_argument("--report", action="store_true", help="rewrite the doc section from stored results")
  parser.add_argument("--attention", default="batched",
                      help="attention for scoring: batched (as TPUs run it) or auto (as CPU workers do, with "
                           "the fused kernel and, under bfloat16, the AMX matmuls); results and the doc "
                           "section get a -cpu suffix")
  parser.add_argument("--settings", default=",".join(SETTINGS), help="precisions to score (float32 first)")
  parser.add_argument("--skip_training", action="store_true", help="score the stand-in already trained at --label")
  parser.add_argument("--variant", help=argparse.SUPPRESS)
  parser.add_argument("--model", help=argparse.SUPPRESS)
  parser.add_argument("--texts", help=argparse.SUPPRESS)
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  row_lengths = tuple(int(x) for x in args.row_lengths.split(","))
  suffix = "" if args.attention == "batched" else "-cpu"
  if args.variant:
    with open(args.json, "w") as f:
      json.dump(score(args.model, args.variant, args.texts, args.max_length, row_lengths, args.attention), f)
    return 0

  if args.seedlike:
    from bench.seedlike import seedlike, seedlike_report  # it imports this module
    command = common.command_line()
    result = {"command": command, "when": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args),
              **seedlike(args)}
    common.save_results("standin-seedlike", result)
    body = seedlike_report(result)
    print(body)
    if not args.no_doc:
      common.update_doc("standin seedlike", body)
    return 0
  if args.report:
    result = common.load_results(f"standin-{args.label}{suffix}")
    result["compare"] = compare(result["runs"])
    common.update_doc(f"standin{suffix}", report(result))
    return 0
  command = common.command_line()
  if args.skip_training:
    model = os.path.join(OUT, args.label)
    with open(os.path.join(model, "train_summary.json")) as f:
      summary = json.load(f)
    summary.setdefault("command", "(trained before; see train_config.json beside it)")
  else:
    model, summary = train(args)
  texts_path = os.path.join(OUT, "score.jsonl")
  write_jsonl(texts_path, corpus(args.score_documents, seed=3))
  runs = {}
  for setting in args.settings.split(","):
    runs[setting] = common.run_variant("bench.standin", [
        "--variant", setting, "--model", model, "--texts", texts_path, "--attention", args.attention,
        "--max_length", str(args.max_length), "--row_lengths", args.row_lengths])
  with open(texts_path, encoding="utf-8") as f:
    labels = [json.loads(line)["score"] for line in f]
  result = {"command": command, "when": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args),
            "summary": summary, "runs": runs, "labels": labels, "compare": compare(runs)}
  common.save_results(f"standin-{args.label}{suffix}", result)
  body = report(result)
  print(body)
  if not args.no_doc:
    common.update_doc(f"standin{suffix}", body)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
