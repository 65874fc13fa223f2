"""Hosts, and a resumed run, must train on the same documents: a fingerprint of the data and
its checks, between two real processes joined as hosts, and where JAX meets them."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

from tests.train.conftest import write_jsonl
from train import agreement
from train.data import Examples

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _examples(texts, labels):
  return Examples(list(texts), np.asarray(labels, np.float32))


TRAIN = _examples(["가 나", "다라", "마"], [1, 2.5, 4])
HELD_OUT = _examples(["바"], [3])


def test_fingerprint_follows_every_text_label_and_position():
  base = agreement.fingerprint(TRAIN, HELD_OUT)
  assert base == agreement.fingerprint(_examples(TRAIN.texts, TRAIN.labels), HELD_OUT)
  assert (base["train"], base["eval"]) == (3, 1)
  changed = [
      (_examples(["가 나", "다라", "마", "사"], [1, 2.5, 4, 0]), HELD_OUT),  # a new shard's document
      (_examples(["가 나", "다라", "마!"], [1, 2.5, 4]), HELD_OUT),  # an edited text
      (_examples(["가 나", "다라", "마"], [1, 2.5, 4.5]), HELD_OUT),  # a relabelled one
      (_examples(["다라", "가 나", "마"], [2.5, 1, 4]), HELD_OUT),  # another order: other batches
      (_examples(["가", "나다라", "마"], [1, 2.5, 4]), HELD_OUT),  # the same characters, other texts
      (TRAIN, _examples(["바"], [2])),
  ]
  digests = {agreement.fingerprint(*c)["sha256"] for c in changed}
  assert len(digests) == len(changed) and base["sha256"] not in digests


def test_two_hosts_check_that_they_read_the_same_documents(tmp_path):
  # Host 1 also matches a shard written after host 0 listed the glob: each process is given
  # its own list of globs, one per round of the check.
  records = [{"text": f"문서 {i}", "score": i % 6} for i in range(12)]
  write_jsonl(str(tmp_path / "a.jsonl"), records)
  late = tmp_path / "late"
  late.mkdir()
  write_jsonl(str(late / "a.jsonl"), records)
  write_jsonl(str(late / "b.jsonl"), [{"text": "늦게 온 문서", "score": 3}])
  same, grown = str(tmp_path / "a.jsonl"), str(late / "*.jsonl")
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen([sys.executable, "-m", "tests.train._hosts", str(i), port, same, theirs],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i, theirs in enumerate((same, grown))]
  outputs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  results = [json.loads(out.split("RESULT ", 1)[1]) for out, _ in outputs]
  assert results[0][0] == results[1][0] == "agreed"
  assert results[0][1].startswith("the hosts read different training data (host 0: 9 + 3 documents")
  assert results[1][1].startswith("the hosts read different training data (host 1: 10 + 3 documents")


def _two_hosts(monkeypatch, other: dict):
  """This process as host 0 of 2, the other host holding `other`'s fingerprint."""
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  theirs = agreement._as_arrays(other)
  monkeypatch.setattr(multihost_utils, "process_allgather", lambda tree, tiled=False: jax.tree.map(
      lambda mine, their: np.concatenate([mine, their]), tree, theirs))


def test_a_relabelled_document_stops_the_run(monkeypatch):
  data = agreement.fingerprint(TRAIN, HELD_OUT)
  _two_hosts(monkeypatch, data)
  agreement.check_hosts(data)
  _two_hosts(monkeypatch, agreement.fingerprint(_examples(TRAIN.texts, [1, 2.5, 0]), HELD_OUT))
  with pytest.raises(AssertionError, match="the hosts read different training data"):
    agreement.check_hosts(data)


def test_a_resume_on_other_data_is_refused():
  data = agreement.fingerprint(TRAIN, HELD_OUT)
  agreement.check_resume(data, dict(data), "ckpt")
  grown = agreement.fingerprint(_examples(TRAIN.texts + ["사"], [1, 2.5, 4, 0]), HELD_OUT)
  with pytest.raises(ValueError, match="data changed since ckpt was saved: 3 \\+ 1 documents"):
    agreement.check_resume(grown, data, "ckpt")
  with pytest.raises(ValueError, match="does not record which data"):
    agreement.check_resume(data, None, "ckpt")
