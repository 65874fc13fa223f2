"""The learnable task: a fresh head on the frozen tiny encoder learns a random teacher head."""
from __future__ import annotations

import json
import os

from train import evaluate


def test_fresh_head_on_frozen_encoder_recovers_the_teachers_int_score(trained):
  config, summary = trained
  rep = summary["report"]
  print(f"\nlearnable task, best step {summary['best']['step']}:\n{evaluate.text(rep)}")
  assert summary["fresh_head"]
  assert len(rep["classes"]) >= 5, "the teacher's labels should spread over the classes"
  assert rep["accuracy"] >= 0.7, "most held-out documents get the teacher's int_score"
  assert rep["binary_f1"] >= 0.85
  history = summary["history"]
  assert [h["epoch"] for h in history] == list(range(1, config.num_epochs + 1))
  assert history[-1]["train_loss"] < history[0]["train_loss"] / 10
  assert summary["best"]["macro_f1"] == max(h["macro_f1"] for h in history)
  assert rep["macro_f1"] == summary["best"]["macro_f1"], "the report is the exported (best) model's"


def test_reports_are_written_in_the_seed_cards_format(trained):
  config, summary = trained
  with open(os.path.join(config.output, evaluate.REPORT_TXT), encoding="utf-8") as f:
    text = f.read()
  for line in ("precision    recall  f1-score   support", "accuracy", "macro avg", "weighted avg",
               "Confusion Matrix:\n[[", "Binary F1 (int_score >= 3 vs < 3): "):
    assert line in text
  with open(os.path.join(config.output, evaluate.REPORT_JSON), encoding="utf-8") as f:
    report = json.load(f)
  assert report["step"] == summary["best"]["step"] and len(report["history"]) == config.num_epochs
  assert sum(map(sum, report["confusion_matrix"])) == report["documents"] == 300
  with open(os.path.join(config.output, evaluate.CONFUSION_PNG), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
