"""Fixtures for pipeline tests: a tiny classifier whose scores spread over 0..5, and a runner
for `python -m pipeline.run` as a real process."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_LENGTH = 64  # short, so that the sample corpus has truncated documents


@pytest.fixture(scope="session")
def spread_model(tmp_path_factory) -> str:
  """A random classifier whose output layer is rescaled so that the sample corpus's scores span
  -0.5..5.5: a threshold then splits the corpus into kept and dropped, as with the real model."""
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer

  path = str(tmp_path_factory.mktemp("spread_model"))
  checkpoints.save_checkpoint(path, hidden_size=36, num_attention_heads=3, num_hidden_layers=2,
                              max_position_embeddings=MAX_LENGTH + 2, seed=3)
  model = AutoModelForSequenceClassification.from_pretrained(path).eval()
  tok = AutoTokenizer.from_pretrained(path)
  texts = [r["text"] for r in checkpoints.sample_corpus_records().values()]
  with torch.no_grad():
    raw = [model(**tok("passage: " + t, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                 ).logits.item() for t in texts]
    scale = 6.0 / (max(raw) - min(raw))
    model.classifier.out_proj.weight.mul_(scale)
    model.classifier.out_proj.bias.mul_(scale).add_(-0.5 - scale * min(raw))
  model.save_pretrained(path)
  return path


def run_pipeline(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
  full_env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **(env or {}))
  proc = subprocess.run([sys.executable, "-m", "pipeline.run", *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=300)
  if check and proc.returncode != 0:
    raise AssertionError(f"pipeline.run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc


THRESHOLD = 3


def score_sample_corpus(model: str, output: str, *extra: str) -> subprocess.CompletedProcess:
  return run_pipeline("--input", os.path.join(checkpoints.SAMPLE_CORPUS, "*"), "--output", output,
                      "--model", model, "--max_length", str(MAX_LENGTH), "--threshold",
                      str(THRESHOLD), "--batch_size", "16", *extra)


@pytest.fixture(scope="session")
def scored_corpus(spread_model, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess]:
  """The sample corpus scored once by a real `pipeline.run` (fp32): (output, process)."""
  output = str(tmp_path_factory.mktemp("out"))
  return output, score_sample_corpus(spread_model, output)


def run_compare(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "pipeline.compare", *args], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO, **(env or {})), capture_output=True,
                        text=True, timeout=120)


def read_scores(output: str) -> list[dict]:
  rows = []
  for path in sorted(glob.glob(os.path.join(output, "scores", "*.parquet"))):
    rows += pq.read_table(path).to_pylist()
  return rows


def read_errors(output: str) -> list[dict]:
  rows = []
  for path in sorted(glob.glob(os.path.join(output, "errors", "*.jsonl"))):
    with open(path, encoding="utf-8") as f:
      rows += [json.loads(line) for line in f]
  return rows


def read_edu(output: str) -> list[dict]:
  rows = []
  for path in sorted(glob.glob(os.path.join(output, "edu", "*.parquet"))):
    rows += pq.read_table(path).to_pylist()
  return rows


def snapshot(output: str) -> dict[str, tuple[float, bytes]]:
  """Every file under output with its mtime and bytes: a rerun must leave both alone."""
  files = {}
  for root, _, names in os.walk(output):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, output)] = (os.stat(path).st_mtime_ns, f.read())
  return files
