"""Shared fixtures: tiny but real Hugging Face checkpoints, built once per test session.

Checkpoint directories are shared across tests: treat them as read-only, copy one before
changing it.
"""
from __future__ import annotations

import os
import tempfile

import pytest

from tests import checkpoints

# Checksums the runs under test remember (model/checksums.py) stay out of the user's home; set
# before any test imports koedu, and inherited by the processes tests start.
os.environ.setdefault("KOEDU_CHECKSUM_CACHE", tempfile.mkdtemp(prefix="koedu-checksums-"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
  """A Unigram tokenizer with XLM-R's special tokens, trained once (about 2 s)."""
  out = tmp_path_factory.mktemp("tokenizer")
  checkpoints.train_tokenizer(str(out))
  return str(out)


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory, tokenizer_dir):
  """make_checkpoint(**kwargs of tests.checkpoints.save_checkpoint) -> directory.

  Written by transformers' save_pretrained, with the session's tokenizer beside the weights;
  the same arguments return the same directory.
  """
  built: dict[tuple, str] = {}

  def make(**kwargs) -> str:
    key = tuple(sorted(kwargs.items()))
    if key not in built:
      out = tmp_path_factory.mktemp("checkpoint")
      built[key] = checkpoints.save_checkpoint(str(out), tokenizer_dir=tokenizer_dir, **kwargs)
    return built[key]

  return make


@pytest.fixture(scope="session")
def checkpoint_dir(make_checkpoint) -> str:
  """The default tiny classifier: hidden 36, 3 heads, 3 layers, FFN 52, 128 positions."""
  return make_checkpoint()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
  """The checkpoints' tokenizer as users load it (AutoTokenizer, fast)."""
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(tokenizer_dir)


# The parity tests' max abs differences (tests/model/conftest.py `max_abs_diff`), printed after
# the run. Hooks here, in the conftest of the path given to pytest: with pytest-xdist the
# controller collects nothing and loads no deeper conftest.
_MEASURED: list[tuple[str, str, int, float]] = []


def pytest_runtest_logreport(report):
  if report.when == "call":
    _MEASURED.extend(tuple(value) for name, value in report.user_properties if name == "max_abs_diff")


def pytest_terminal_summary(terminalreporter):
  if not _MEASURED:
    return
  terminalreporter.section("max abs diff of our scores vs the reference")
  for test, label, n, diff in _MEASURED:
    terminalreporter.write_line(f"{diff:9.2e}  {n:5d} values  {label}  ({test})")
