"""Settings checks, and the schedule being transformers' cosine-with-warm-up step for step."""
from __future__ import annotations

import numpy as np
import pytest

from train import optim, run
from train.config import TrainConfig


def test_defaults_are_the_seeds_recipe():
  config = run.parser().parse_args(["--data", "a.jsonl,b/*.parquet", "--output", "out"])
  config = TrainConfig(**vars(config))
  assert config.data == ("a.jsonl", "b/*.parquet") and config.model == "nlpai-lab/KoE5"
  assert (config.batch_size, config.peak_learning_rate, config.warmup_ratio) == (2048, 3e-4, 0.1)
  assert (config.b1, config.b2, config.eps, config.weight_decay) == (0.9, 0.98, 1e-8, 0.01)
  assert config.freeze_encoder and config.cached and config.num_epochs == 20
  assert config.eval_size == 4096 and config.label_field == "score"
  args = vars(run.parser().parse_args(["--data", "a", "--output", "o", "--no_freeze_encoder"]))
  full = TrainConfig(**args)
  assert not full.freeze_encoder and not full.cached and full.num_epochs == 3
  # The whole of XLM-R trains at a fine-tune's rate, with dropout; the head alone at the seed's.
  assert full.peak_learning_rate == 2e-5 and full.dropout and not config.dropout
  assert full.recipe()["learning_rate"] == 2e-5 and config.recipe()["learning_rate"] == 3e-4
  given = TrainConfig(**vars(run.parser().parse_args(["--data", "a", "--output", "o", "--no_freeze_encoder",
                                                      "--learning_rate", "1e-5"])))
  assert given.peak_learning_rate == 1e-5
  args = vars(run.parser().parse_args(["--data", "a", "--output", "o", "--no_cache_features"]))
  assert TrainConfig(**args).freeze_encoder and not TrainConfig(**args).cached


@pytest.mark.parametrize("bad", [dict(data=()), dict(epochs=0), dict(warmup_ratio=2),
                                 dict(eval_size=2.5), dict(row_lengths=(64, 32)),
                                 dict(dtype="float16"), dict(threshold=6), dict(batch_size=0),
                                 dict(learning_rate=0.0)])
def test_bad_settings_are_refused(bad):
  with pytest.raises(ValueError):
    TrainConfig(**{"data": ("x",), "output": "o", **bad})


def test_schedule_is_transformers_cosine_with_warmup():
  import torch
  from transformers import get_cosine_schedule_with_warmup
  config = TrainConfig(data=("x",), output="o", learning_rate=3e-4, warmup_ratio=0.1)
  ours = optim.schedule(config, 50)
  sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
  theirs = get_cosine_schedule_with_warmup(sgd, 5, 50)
  for step in range(50):
    np.testing.assert_allclose(float(ours(step)), theirs.get_last_lr()[0], rtol=1e-5, atol=1e-12)
    sgd.step()
    theirs.step()
