"""`python -m train.run` end to end, as a user runs it: a real process on a tiny checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from model import checkpoint
from tests.train.conftest import write_jsonl
from train import hosts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_trains_evaluates_and_exports(corpus, encoder_dir, tmp_path):
  _, texts, labels = corpus
  train = write_jsonl(str(tmp_path / "train.jsonl"),
                      [{"body": t, "edu": float(l)} for t, l in zip(texts[:200], labels[:200])] + ["{broken"])
  held_out = write_jsonl(str(tmp_path / "eval.jsonl"),
                         [{"body": t, "edu": float(l)} for t, l in zip(texts[200:260], labels[200:260])])
  out = tmp_path / "out"
  args = ["--data", train, "--eval_data", held_out, "--output", str(out), "--model", encoder_dir,
          "--text_field", "body", "--label_field", "edu", "--epochs", "2", "--batch_size", "48",
          "--device_batch_size", "16", "--learning_rate", "3e-3", "--max_length", "64",
          "--row_lengths", "32,64", "--encode_tokens_per_device", "512", "--seed", "1"]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "train.run", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "macro avg" in proc.stdout and "best step" in proc.stdout
  assert "1 bad rows" in proc.stderr
  names = set(os.listdir(out))
  assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
          "eval_report.txt", "eval_report.json", "confusion_matrix.png", "data_report.json",
          "bad_rows.jsonl", "train_summary.json", "checkpoints"} <= names
  data_report = json.loads((out / "data_report.json").read_text())
  assert data_report["train"] == 200 and data_report["eval"] == 60 and data_report["bad"] == 1
  report = json.loads((out / "eval_report.json").read_text())
  assert report["documents"] == 60 and len(report["history"]) == 2
  _, model = checkpoint.load_classifier(str(out))
  assert np.isfinite(np.asarray(model.head.out_proj.kernel.get_value())).all()


@pytest.mark.parametrize("missing", ["model", "data"])
def test_cli_exits_2_naming_what_is_not_there(missing, corpus, encoder_dir, tmp_path, caplog):
  data, _, _ = corpus
  gone = str(tmp_path / "not_there")
  from train import run
  status = run.main(["--data", gone if missing == "data" else data, "--output", str(tmp_path / "out"),
                     "--model", gone if missing == "model" else encoder_dir, "--max_steps", "1",
                     "--eval_size", "0.2"])
  assert status == 2  # the user's to fix (pipeline.faults.exit_code), with a message, no traceback
  assert "not_there" in caplog.text


def test_cli_refuses_contradictory_flags():
  from train import run
  with pytest.raises(SystemExit):
    run.parser().parse_args(["--data", "x", "--output", "y", "--epochs", "2", "--max_steps", "3"])


@pytest.mark.parametrize("environ, flag, expected", [
    ({}, False, False),  # no TPU runtime: one host
    ({}, True, True),  # --distributed
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False, False),  # koedu's Dataflow image: one host
    ({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1,t1v-2,t1v-3"}, False, True),
    ({"TPU_PROCESS_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476"}, False, True),
    ({"TPU_WORKER_HOSTNAMES": "localhost", "MEGASCALE_NUM_SLICES": "2"}, False, True),
])
def test_hosts_join_when_the_tpu_runtime_reports_several(environ, flag, expected):
  assert hosts.should_initialize(flag, environ) is expected


def test_poison_rows_are_listed_and_the_run_completes(small_corpus, encoder_dir, tmp_path):
  # 120 good rows and 4 poison ones: an escaped lone surrogate (valid JSON, no UTF-8 string can
  # hold it), a blank line, a text that is a number, a label off the 0-5 scale.
  from train import run
  good = open(small_corpus, encoding="utf-8").read().splitlines()
  poison = ['{"text": "\\ud800", "score": 2}', "", '{"text": 42, "score": 1}',
            json.dumps({"text": "라벨 9", "score": 9})]
  data = tmp_path / "poisoned.jsonl"
  data.write_text("\n".join(good[:30] + poison[:2] + good[30:90] + poison[2:] + good[90:]) + "\n",
                  encoding="utf-8")
  out = tmp_path / "out"
  assert run.main(["--data", str(data), "--output", str(out), "--model", encoder_dir, "--epochs", "1",
                   "--batch_size", "32", "--eval_size", "24", "--max_length", "64", "--row_lengths", "32,64",
                   "--encode_tokens_per_device", "512"]) == 0
  bad = [json.loads(line) for line in (out / "bad_rows.jsonl").read_text().splitlines()]
  assert [(r["row"], r["reason"].split(":")[0]) for r in bad] == [
      (30, "invalid_unicode"), (31, "empty_line"), (92, "non_string_text"), (93, "label_out_of_range")]
  assert all(r["source"] == str(data) for r in bad) and bad[3]["raw"] == poison[3]
  report = json.loads((out / "data_report.json").read_text())
  assert report["rows"] == 124 and report["used"] == 120 and report["train"] + report["eval"] == 120
  assert json.loads((out / "eval_report.json").read_text())["documents"] == 24
