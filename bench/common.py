"""What every benchmark shares: the checkpoints, the documents, FLOP counting, the machine's
state during a run, and writing a section of docs/benchmarks.md.

Benchmarks are scripts run by hand (`python -m bench.<name>`), never tests. Each one runs every
variant in a fresh process, so peak RSS and XLA flags belong to that variant alone, and stores
its figures as JSON under the bench directory, from which `bench.summary` checks the goals.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
BENCH_DIR = os.environ.get("KOEDU_BENCH_DIR", os.path.join(os.path.expanduser("~"), ".cache", "koedu", "bench"))
RESULTS = os.path.join(BENCH_DIR, "results")

# XLM-RoBERTa shapes. vocab 250002 and 514 positions as the real checkpoints have them, with the
# small trained tokenizer using the first few hundred rows: embedding lookups cost nothing
# either way, the table's size matters for memory and loading.
SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
VOCAB_SIZE = 250002
MAX_POSITIONS = 514
MAX_LENGTH = 512

# Document lengths in tokens: log-normal, median 200, sigma 0.9, 8 .. 6000 before truncation.
# Most web pages are short (navigation, news briefs, forum posts), some are long articles: about
# 15% pass 512 tokens and are truncated, the mean after truncation is about 220.
MEDIAN_TOKENS, SIGMA, MIN_TOKENS, MAX_TOKENS = 200, 0.9, 8, 6000


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- checkpoints

def tokenizer_dir() -> str:
  out = os.path.join(BENCH_DIR, "tokenizer")
  if not os.path.exists(os.path.join(out, "tokenizer.json")):
    from model.random_checkpoint import train_tokenizer
    os.makedirs(out, exist_ok=True)
    train_tokenizer(out)
  return out


def checkpoint(size: str) -> str:
  """A random XLMRobertaForSequenceClassification of `size`, saved by transformers, cached.

  Random heads give nearly the same score to every document. Like a trained classifier's, these
  scores are spread over the 0..5 scale: the head's output layer is rescaled so that the fp32
  scores of 256 benchmark documents have mean 2 and standard deviation 1.2. Without this, every
  int_score would be equal and bf16 agreement would prove nothing.
  """
  out = os.path.join(BENCH_DIR, f"xlmr-{size}")
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer

  from model import random_checkpoint
  log(f"building the {size} checkpoint in {out} (once)")
  tmp = out + ".tmp"
  random_checkpoint.make(tmp, size, seed=0, tokenizer_dir=tokenizer_dir())
  model = AutoModelForSequenceClassification.from_pretrained(tmp).eval()
  tokenizer = AutoTokenizer.from_pretrained(tmp)
  logits = []
  with torch.no_grad():
    for text in documents(128, seed=99):
      enc = tokenizer("passage: " + text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
      logits.append(float(model(**enc).logits[0, 0]))
  mean, std = float(np.mean(logits)), float(np.std(logits))
  head = model.classifier.out_proj
  with torch.no_grad():
    head.weight *= 1.2 / std
    head.bias.copy_((head.bias - mean) * 1.2 / std + 2.0)
  model.save_pretrained(tmp)
  os.rename(tmp, out)
  return out


# ---------------------------------------------------------------------------- documents

def target_lengths(n: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  lengths = rng.lognormal(np.log(MEDIAN_TOKENS), SIGMA, n)
  return np.clip(np.rint(lengths), MIN_TOKENS, MAX_TOKENS).astype(np.int64)


def documents(n: int, seed: int = 0) -> list[str]:
  """`n` Korean texts whose token counts follow the distribution above, in arrival order."""
  from model.random_checkpoint import korean_sentences
  # About 1.2 tokens per word with the benchmark tokenizer, plus `<s>`, `passage: ` and `</s>`.
  texts = []
  for i, tokens in enumerate(target_lengths(n, seed)):
    words = max(1, int(round((tokens - 5) / 1.2)))
    sentences = korean_sentences(words // 8 + 1, seed=seed * 1_000_003 + i, min_words=4, max_words=12)
    text = " ".join(sentences).split(" ")[:words]
    texts.append(" ".join(text))
  return texts


def length_summary(num_tokens: np.ndarray) -> dict:
  """Percentiles of tokens per document after truncation, and how many were truncated."""
  n = np.asarray(num_tokens)
  return {"documents": int(n.size), "tokens": int(n.sum()), "mean": float(n.mean()),
          "p10": int(np.percentile(n, 10)), "p50": int(np.percentile(n, 50)),
          "p90": int(np.percentile(n, 90)), "at_max_length": float(np.mean(n >= MAX_LENGTH))}


# ---------------------------------------------------------------------------- FLOPs

def matmul_shapes(size: str) -> list[tuple[int, int, int]]:
  """(in, out, times per layer) of the encoder's weight matmuls."""
  h, f = SIZES[size]["hidden_size"], SIZES[size]["intermediate_size"]
  return [(h, h, 4), (h, f, 1), (f, h, 1)]


def flops_per_token(size: str) -> float:
  """2 x the encoder's matmul weights: 2 x layers x (4 h^2 + 2 h f).

  Counted: every weight matrix of every layer, once per real token. Not counted: biases,
  LayerNorms, the embedding lookups, the head (once per document), and attention's own
  QK^T and AV products, which grow with the row length and are part of what packing costs.
  """
  layers = SIZES[size]["num_hidden_layers"]
  return 2.0 * layers * sum(i * o * k for i, o, k in matmul_shapes(size))


# ---------------------------------------------------------------------------- the machine

def machine() -> dict:
  flags = ""
  with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("flags"):
        flags = line
        break
      if line.startswith("model name"):
        name = line.split(":", 1)[1].strip()
  isa = [x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if re.search(rf"\b{x}\b", flags)]
  import importlib.metadata as md
  versions = {}
  for pkg in ("jax", "jaxlib", "flax", "torch", "transformers", "tokenizers", "apache-beam"):
    with contextlib.suppress(md.PackageNotFoundError):
      versions[pkg] = md.version(pkg)
  return {"cpu": locals().get("name", platform.processor()), "cores": os.cpu_count(), "isa": isa,
          "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
          "python": platform.python_version(), "versions": versions}


def _busy_jiffies() -> tuple[int, int]:
  with open("/proc/stat") as f:
    fields = [int(x) for x in f.readline().split()[1:]]
  idle = fields[3] + fields[4]
  return sum(fields[:8]) - idle, sum(fields[:8])


def _own_cpu_seconds() -> float:
  ru_self, ru_children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return ru_self.ru_utime + ru_self.ru_stime + ru_children.ru_utime + ru_children.ru_stime


def others_busy(seconds: float = 3.0) -> float:
  """Fraction of the machine other processes kept busy over the last `seconds`."""
  busy0, total0 = _busy_jiffies()
  own0 = _own_cpu_seconds()
  time.sleep(seconds)
  busy1, total1 = _busy_jiffies()
  own = (_own_cpu_seconds() - own0) * os.sysconf("SC_CLK_TCK")
  return max(0.0, (busy1 - busy0 - own) / max(1, total1 - total0))


def wait_until_quiet(max_busy: float | None = None, timeout: float = 3600) -> float:
  """Blocks until other processes use under `max_busy` of the machine (other engineers run
  tests here; KOEDU_BENCH_MAX_BUSY, default 5%); returns the last reading."""
  if max_busy is None:
    max_busy = float(os.environ.get("KOEDU_BENCH_MAX_BUSY", "0.05"))
  start = time.time()
  while True:
    busy = others_busy()
    if busy <= max_busy or time.time() - start > timeout:
      return busy
    log(f"machine busy ({busy:.0%} used by other processes); waiting")
    time.sleep(20)


@dataclasses.dataclass
class Interference:
  """CPU time other processes took while a measurement ran, as a fraction of the machine."""
  fraction: float = 0.0

  @contextlib.contextmanager
  def measure(self):
    busy0, total0 = _busy_jiffies()
    own0 = _own_cpu_seconds()
    try:
      yield self
    finally:
      busy1, total1 = _busy_jiffies()
      own = (_own_cpu_seconds() - own0) * os.sysconf("SC_CLK_TCK")
      self.fraction = max(0.0, (busy1 - busy0 - own) / max(1, total1 - total0))


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---------------------------------------------------------------------------- variants

def run_variant(module: str, args: list[str], env: dict | None = None) -> dict:
  """Runs `python -m module args --json OUT` in a fresh process and returns what it wrote."""
  import tempfile
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out = f.name
  cmd = [sys.executable, "-m", module, *args, "--json", out]
  log("$ " + " ".join(cmd))
  subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, **(env or {})})
  with open(out) as f:
    result = json.load(f)
  os.unlink(out)
  return result


def worktree(commit: str) -> str:
  """A checkout of `commit` beside the results, for the "before" rows."""
  path = os.path.join(BENCH_DIR, f"worktree-{commit}")
  if not os.path.exists(os.path.join(path, "pipeline")):
    subprocess.run(["git", "worktree", "add", "--detach", path, commit], cwd=REPO, check=True)
  return path


def save_results(name: str, results: dict) -> str:
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, f"{name}.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
  return path


def load_results(name: str) -> dict | None:
  path = os.path.join(RESULTS, f"{name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def command_line() -> str:
  return "python -m " + " ".join([sys.modules["__main__"].__spec__.name, *sys.argv[1:]])


# ---------------------------------------------------------------------------- the document

def update_doc(section: str, body: str) -> None:
  """Replaces the text between this section's markers in docs/benchmarks.md (appends it the
  first time); everything outside the markers is written by hand."""
  begin, end = f"<!-- BEGIN {section} (written by bench/) -->", f"<!-- END {section} -->"
  text = open(DOC, encoding="utf-8").read() if os.path.exists(DOC) else "# Benchmarks\n"
  block = f"{begin}\n{body.rstrip()}\n{end}"
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  with open(DOC, "w", encoding="utf-8") as f:
    f.write(text)


def table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def provenance(results: list[dict], command: str) -> str:
  """The command, when, and how quiet the machine was."""
  worst = max((r.get("others_busy", 0.0) for r in results), default=0.0)
  m = machine()
  return (f"Command: `{command}` (from the repository root, in a virtual environment with `pip install -e '.[test,bench]'`), "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Machine: {m['cpu']}, {m['cores']} cores "
          f"({', '.join(m['isa'])}), {m['memory_gib']} GiB; jax {m['versions'].get('jaxlib')}, "
          f"torch {m['versions'].get('torch')}, transformers {m['versions'].get('transformers')}. "
          f"Other processes used at most {worst:.1%} of the machine during these runs.")
