"""The seed model card's evaluation: scikit-learn's classification report over int classes,
the confusion matrix and binary F1 at the threshold, as text, JSON and a picture.

Classes are round(clip(x, 0, 5)) of labels and predictions alike, halves to even, the
int_score the pipeline writes; the report lists the classes that occur in either, as the
seed's table (labels 0-4) does.
"""
from __future__ import annotations

import io
import json

import numpy as np

from model.recipe import int_scores

REPORT_TXT, REPORT_JSON, CONFUSION_PNG = "eval_report.txt", "eval_report.json", "confusion_matrix.png"


def report(labels: np.ndarray, scores: np.ndarray, threshold: int) -> dict:
  from sklearn import metrics
  y_true, y_pred = int_scores(labels), int_scores(scores)
  classes = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
  kwargs = dict(labels=classes, digits=2, zero_division=0)
  per_class = metrics.classification_report(y_true, y_pred, output_dict=True, **kwargs)
  return {
      "documents": int(len(labels)),
      "classes": classes,
      "classification_report": per_class,
      "table": metrics.classification_report(y_true, y_pred, **kwargs),
      "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=classes).tolist(),
      "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
      "macro_f1": float(per_class["macro avg"]["f1-score"]),
      "weighted_f1": float(per_class["weighted avg"]["f1-score"]),
      "threshold": threshold,
      "binary_f1": float(metrics.f1_score(y_true >= threshold, y_pred >= threshold, zero_division=0)),
      "mse": float(np.mean((np.asarray(scores, np.float64) - labels) ** 2)),
  }


def summary(rep: dict) -> dict:
  """The few numbers a log line or the history needs."""
  return {k: rep[k] for k in ("accuracy", "macro_f1", "weighted_f1", "binary_f1", "mse")}


def text(rep: dict) -> str:
  """fineweb-edu's printout (the seed card's format), then binary F1 and MSE."""
  t = rep["threshold"]
  return (f"{rep['table']}\nConfusion Matrix:\n{np.asarray(rep['confusion_matrix'])}\n\n"
          f"Binary F1 (int_score >= {t} vs < {t}): {rep['binary_f1']:.2f}\n"
          f"MSE: {rep['mse']:.4f}\n")


def confusion_png(rep: dict) -> bytes:
  import matplotlib
  matplotlib.use("Agg")  # no display on TPU hosts
  import matplotlib.pyplot as plt
  from sklearn.metrics import ConfusionMatrixDisplay
  fig, ax = plt.subplots(figsize=(6, 5))
  ConfusionMatrixDisplay(np.asarray(rep["confusion_matrix"]), display_labels=rep["classes"]).plot(
      ax=ax, cmap="Blues", colorbar=False, values_format="d")
  ax.set_xlabel("predicted int_score")
  ax.set_ylabel("label int_score")
  ax.set_title(f"accuracy {rep['accuracy']:.2f}, macro F1 {rep['macro_f1']:.2f}, "
               f"binary F1 {rep['binary_f1']:.2f}")
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  return buffer.getvalue()


def write(output_files, rep: dict, extra: dict) -> None:
  """eval_report.txt, eval_report.json (the report plus `extra`: which step, the history) and
  the confusion-matrix picture. `output_files.write(name, bytes)` puts a file in the output."""
  header = f"Evaluation of the exported model (step {extra.get('step')}, epoch {extra.get('epoch')}), " \
           f"{rep['documents']} documents\n\n"
  output_files.write(REPORT_TXT, (header + text(rep)).encode())
  output_files.write(REPORT_JSON, json.dumps({**extra, **rep}, indent=2).encode())
  output_files.write(CONFUSION_PNG, confusion_png(rep))
