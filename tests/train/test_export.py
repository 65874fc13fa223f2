"""The exported directory: transformers and koedu's own loader give the same scores, and they
reproduce the evaluation the run reported."""
from __future__ import annotations

import json
import os

import numpy as np

from model.recipe import PREFIX
from model.runner import RunnerConfig, load_runner
from model.tokenize import DocumentTokenizer
from train import data, evaluate


def _koedu_scores(model_dir, texts):
  runner = load_runner(model_dir, RunnerConfig(max_length=64, row_lengths=(32, 64), tokens_per_device=512))
  return runner.run(DocumentTokenizer(model_dir, 64)(texts).ids)


def test_export_loads_in_transformers_with_the_same_scores(trained, corpus):
  import torch
  from transformers import AutoModelForSequenceClassification, AutoTokenizer
  config, _ = trained
  texts = corpus[1][:48]
  with open(os.path.join(config.output, "config.json"), encoding="utf-8") as f:
    hf_config = json.load(f)
  assert hf_config["architectures"] == ["XLMRobertaForSequenceClassification"]
  model = AutoModelForSequenceClassification.from_pretrained(config.output).eval()
  assert model.config.num_labels == 1
  tokenizer = AutoTokenizer.from_pretrained(config.output)
  batch = tokenizer([PREFIX + t for t in texts], padding=True, truncation=True, max_length=64,
                    return_tensors="pt")
  with torch.no_grad():
    theirs = model(**batch).logits[:, 0].numpy()
  ours = _koedu_scores(config.output, texts)
  assert theirs.std() > 0.5, "scores should spread, or the comparison says little"
  np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_exported_model_reproduces_the_reported_evaluation(trained, corpus):
  config, summary = trained
  _, texts, labels = corpus
  _, eval_index = data.stratified_split(labels, config.eval_size, config.seed)
  scores = _koedu_scores(config.output, [texts[i] for i in eval_index])
  rep = evaluate.report(labels[eval_index], scores, config.threshold)
  assert rep["confusion_matrix"] == summary["report"]["confusion_matrix"]
  assert abs(rep["mse"] - summary["report"]["mse"]) < 1e-5
