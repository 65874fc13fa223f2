"""Fixtures for training tests: a tiny encoder-only base and a corpus a teacher labelled.

The teacher is the tiny encoder with a random head of its own; its scores, scaled and shifted
to spread over 0-5, are the labels. A student head trained on the frozen encoder can recover
them exactly, so "most held-out int_scores recovered" is a fair bar for a working trainer.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.checkpoints import korean_sentences

TEACHER_SEED = 99
CORPUS = 1500


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_on_fake_devices(module: str, *args: str) -> dict:
  """`python -m module args...` in a process of its own (fake CPU devices need a fresh JAX),
  and the JSON it prints after "RESULT "."""
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.split("RESULT ", 1)[1])


def write_jsonl(path: str, records) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
  return path


def teacher_labels(model_dir: str, texts: list[str], max_length: int = 64) -> np.ndarray:
  import jax.numpy as jnp

  from model import convert, runtime
  from model.runner import RunnerConfig
  from model.tokenize import DocumentTokenizer
  from train import base, features
  start = base.load(model_dir, seed=0)
  params = {**start.params, **base.fresh_head(start.config, TEACHER_SEED)}
  rt = runtime.resolve(start.config, "float32")
  teacher = convert.model_from_params(start.config, params, **rt.model_kwargs())
  ids = DocumentTokenizer(model_dir, max_length)(texts).ids
  feats = features.encode(teacher, ids, rt, RunnerConfig(max_length, (32, 64), 512))
  scores = np.asarray(teacher.head(jnp.asarray(feats)))[:, 0]
  return np.clip(2.5 + 1.2 * (scores - scores.mean()) / scores.std(), 0, 5).astype(np.float32)


@pytest.fixture(scope="session")
def encoder_dir(make_checkpoint) -> str:
  """Encoder-only, as nlpai-lab/KoE5 is published: training adds a fresh head."""
  return make_checkpoint(encoder_only=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, encoder_dir):
  """(data.jsonl, texts, labels): CORPUS documents labelled by the teacher."""
  texts = korean_sentences(CORPUS, seed=5)
  labels = teacher_labels(encoder_dir, texts)
  path = os.path.join(tmp_path_factory.mktemp("corpus"), "data.jsonl")
  write_jsonl(path, ({"text": t, "score": float(l)} for t, l in zip(texts, labels)))
  return path, texts, labels


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, corpus):
  """The first 120 documents, for runs that train the whole model."""
  _, texts, labels = corpus
  path = os.path.join(tmp_path_factory.mktemp("small"), "data.jsonl")
  write_jsonl(path, ({"text": t, "score": float(l)} for t, l in zip(texts[:120], labels[:120])))
  return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, corpus, encoder_dir):
  """The learnable task, trained once: a fresh head on the frozen encoder (the default mode)."""
  from train.config import TrainConfig
  from train.loop import train_and_evaluate
  config = TrainConfig.tiny(corpus[0], str(tmp_path_factory.mktemp("trained")), encoder_dir,
                            epochs=16, batch_size=64, learning_rate=3e-3)
  return config, train_and_evaluate(config)
