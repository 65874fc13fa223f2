"""Shared fixtures: tiny but real Hugging Face checkpoints, built once per test session.

Checkpoint directories are shared across tests: treat them as read-only, copy one before
changing it.
"""
from __future__ import annotations

import pytest

from tests import checkpoints


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
