"""Packing documents into rows, and the compiled runner around it."""
from __future__ import annotations

import numpy as np
import pytest

from model import fused_attention, packing, runtime
from model.checkpoint import load_classifier
from model.recipe import int_scores
from model.runner import EncoderRunner, RunnerConfig, load_runner
from model.tokenize import DocumentTokenizer
from tests.model.reference import mixed_texts

PAD = 1


def _lengths(seed: int, n: int, low: int, high: int) -> np.ndarray:
  """Mostly very short documents with a tail of long ones, as web text is."""
  rng = np.random.default_rng(seed)
  short = rng.integers(low, low + 6, size=n - n // 4)
  long = rng.integers(low, high + 1, size=n // 4)
  return rng.permutation(np.concatenate([short, long]))


# (row lengths, document lengths): tiny rows that hold a single `<s>` slot, odd sizes, one length.
CASES = [
    ((6, 7), _lengths(0, 40, 2, 7)),
    ((7,), _lengths(1, 23, 2, 7)),
    ((9, 17, 33), _lengths(2, 101, 2, 33)),
    ((13, 40), _lengths(3, 57, 4, 40)),
    ((64,), np.full(31, 5)),
]


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("row_lengths, lengths", CASES)
def test_every_document_once_and_rows_within_bounds(row_lengths, lengths, pack):
  rows = packing.assign_rows(lengths, row_lengths, pack)
  assigned = sorted(doc for _, docs in rows for doc in docs)
  assert assigned == list(range(len(lengths)))
  for length, docs in rows:
    assert length in row_lengths
    assert sum(lengths[d] for d in docs) <= length
    assert 1 <= len(docs) <= packing.max_documents_per_row(length, pack)
    if not pack:
      # One per row, in the shortest row length that holds it.
      assert len(docs) == 1 and length == min(l for l in row_lengths if l >= lengths[docs[0]])
  if pack and max(packing.max_documents_per_row(l, pack) for l in row_lengths) > 1:
    assert len(rows) < len(lengths), "nothing was packed"


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("row_lengths, lengths", CASES)
def test_batches_place_each_document_where_its_score_is_read(row_lengths, lengths, pack):
  rng = np.random.default_rng(7)
  ids = [np.concatenate([[0], rng.integers(3, 300, n - 2), [2]]).astype(np.int32) for n in lengths]
  rows = packing.assign_rows(lengths, row_lengths, pack)
  sizes = {l: packing.batch_sizes(5, 1, 4) for l in row_lengths}
  batches = packing.make_batches(ids, rows, sizes, PAD, pack)
  assert sorted(np.concatenate([b.documents for b in batches]).tolist()) == list(range(len(ids)))
  for batch in batches:
    rows_, length = batch.shape
    assert rows_ in sizes[length]
    assert batch.cls_index.shape == (rows_, packing.max_documents_per_row(length, pack))
    covered = np.zeros(batch.shape, bool)
    for doc, r, c in zip(batch.documents, *batch.slots):
      start, n = batch.cls_index[r, c], len(ids[doc])
      span = slice(start, start + n)
      assert np.array_equal(batch.input_ids[r, span], ids[doc])
      assert (batch.segment_ids[r, span] == c + 1).all()
      assert np.array_equal(batch.position_ids[r, span], np.arange(PAD + 1, PAD + 1 + n))
      assert not covered[r, span].any()
      covered[r, span] = True
    # Everything no document owns is padding, which no token attends to.
    assert (batch.segment_ids[~covered] == 0).all() and (batch.input_ids[~covered] == PAD).all()
    assert batch.real_tokens == covered.sum()


def test_document_longer_than_every_row_is_an_error():
  with pytest.raises(ValueError, match="longer than the longest row"):
    packing.assign_rows(np.array([3, 20]), (8, 16), True)


def test_batch_sizes_are_multiples_of_the_device_count():
  for full, devices in [(40, 8), (24, 8), (8, 8), (7, 1), (96, 3)]:
    sizes = packing.batch_sizes(full, devices, 8)
    assert sizes[0] == full - full % devices and sizes == sorted(set(sizes), reverse=True)
    assert all(s % devices == 0 and s > 0 for s in sizes)


@pytest.fixture(scope="module")
def classifier(checkpoint_dir):
  return load_classifier(checkpoint_dir)[1]


def plain_runtime() -> runtime.Runtime:
  """What load_classifier builds by default (fp32, XLA's batched attention), on every device."""
  return runtime.Runtime("float32", "batched", runtime.make_mesh())


def test_packed_scores_equal_unpacked_scores(checkpoint_dir, classifier, max_abs_diff):
  max_length = 45
  texts = mixed_texts(seed=21) + mixed_texts(seed=22)[:6]
  ids = DocumentTokenizer(checkpoint_dir, max_length)(texts).ids
  scores, computed = {}, {}
  for pack in (True, False):
    runner = EncoderRunner(classifier, plain_runtime(),
                           RunnerConfig(max_length=max_length, row_lengths=(15, 30),
                                        tokens_per_device=90, smallest_batch_fraction=2, pack=pack))
    scores[pack] = runner.run(ids)
    computed[pack] = runner.stats.computed_tokens
  assert computed[True] < computed[False], "packing saved no padding; the comparison proves little"
  assert np.ptp(scores[False]) > 1e-2
  assert max_abs_diff("packed vs unpacked", scores[True], scores[False]) <= 1e-4


@pytest.mark.parametrize("attention", ["batched", "rows"])  # "fused" is float32 only
def test_bfloat16_scores_follow_float32(checkpoint_dir, classifier, max_abs_diff, attention):
  # The TPU default. Agreement of int_score on realistic documents is measured by bench/ (a
  # tiny random model's scores span too little of 0..5 for it to mean anything); here: the
  # bf16 path runs end to end and stays near fp32, far nearer than the scores' own spread.
  import jax.numpy as jnp
  max_length = 45
  ids = DocumentTokenizer(checkpoint_dir, max_length)(mixed_texts(seed=23)).ids
  # Both attentions: "batched" is what TPUs run, "rows" what CPUs run.
  config = RunnerConfig(max_length=max_length, row_lengths=(15, 30), tokens_per_device=90)
  fp32 = load_runner(checkpoint_dir, config, precision="float32", attention=attention).run(ids)
  bf16_runner = load_runner(checkpoint_dir, config, precision="bfloat16", attention=attention)
  low = nnx_model(bf16_runner)
  # What every document shares stays fp32: rounded, it would shift all scores alike.
  shared = (low.head.out_proj.kernel, low.head.dense.kernel, low.embeddings.position.embedding,
            low.embeddings.token_type.embedding, low.layers[0].mlp.norm.scale)
  assert all(p.dtype == jnp.float32 for p in shared)
  assert low.layers[0].mlp.intermediate.kernel.dtype == jnp.bfloat16
  assert low.embeddings.word.embedding.dtype == jnp.bfloat16
  bf16 = bf16_runner.run(ids)
  assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32), "bf16 computed in fp32"
  assert max_abs_diff(f"bfloat16 vs float32, {attention} attention", bf16, fp32) <= 0.1 * np.ptp(fp32)
  assert np.corrcoef(bf16, fp32)[0, 1] > 0.99
  # The fused CPU kernel computes in bf16 too (tests/model/test_cpu_bf16.py holds it to XLA's).
  if fused_attention.unavailable_reason() is None:
    fused = load_runner(checkpoint_dir, config, precision="bfloat16", attention="fused").run(ids)
    assert max_abs_diff(f"bfloat16 fused vs {attention}", fused, bf16) <= 0.1 * np.ptp(fp32)
  else:
    with pytest.raises(ValueError, match="'fused' cannot run here"):
      load_runner(checkpoint_dir, config, precision="bfloat16", attention="fused")


def nnx_model(runner: EncoderRunner):
  """The model a runner holds, with its parameters as placed on the devices."""
  from flax import nnx
  return nnx.merge(runner._graphdef, runner._state)


def test_rows_with_a_single_document_slot(classifier, max_abs_diff):
  # Rows of 7 tokens have one `<s>` slot (7 // 4), yet leave room for a second 2-token document.
  rng = np.random.default_rng(3)
  ids = [np.concatenate([[0], rng.integers(3, 300, n - 2), [2]]).astype(np.int32)
         for n in (2, 3, 2, 5, 2, 7, 3)]
  scores = {pack: EncoderRunner(classifier, plain_runtime(),
                                RunnerConfig(max_length=7, row_lengths=(7,), tokens_per_device=14,
                                             smallest_batch_fraction=1, pack=pack)).run(ids)
            for pack in (True, False)}
  assert max_abs_diff("single-slot rows packed vs unpacked", scores[True], scores[False]) <= 1e-4


def test_runner_refuses_what_it_cannot_score(checkpoint_dir, classifier):
  cfg = classifier.config
  with pytest.raises(ValueError, match="exceeds"):
    EncoderRunner(classifier, plain_runtime(), RunnerConfig(max_length=cfg.max_length + 1, row_lengths=(16,)))
  with pytest.raises(ValueError, match="attention must be"):
    runtime.resolve(cfg, attention="flash")
  runner = load_runner(checkpoint_dir, RunnerConfig(max_length=20, row_lengths=(10,), tokens_per_device=20))
  fused_runs = fused_attention.unavailable_reason() is None
  assert runner.runtime.attention == ("fused" if fused_runs else "rows"), "'auto' attention on CPU devices"
  with pytest.raises(ValueError, match="2..20 tokens"):
    runner.run([np.array([0, 5, 2]), np.arange(21) % 300])
  with pytest.raises(ValueError, match="2..20 tokens"):
    runner.run([np.array([0])])
  assert runner.run([]).shape == (0,)


def test_int_scores_round_half_to_even_on_clipped_scores():
  edges = [2.5, 3.5, 0.5, 1.5, 4.5, -1.0, 7.0, 4.4999, 4.5001, 5.0, 0.0, -0.5, 5.5, 2.4999999,
           np.float32(2.5), np.nextafter(np.float32(3.5), np.float32(0))]
  scores = np.asarray(edges, np.float32)
  expected = [int(round(max(0, min(float(s), 5)))) for s in scores]
  got = int_scores(scores)
  assert got.dtype.kind == "i" and got.tolist() == expected
  assert got.tolist()[:2] == [2, 4]  # halves go to even, as Python's round


def test_a_last_batch_takes_shorter_rows_into_its_empty_rows():
  # Five 512-token rows fill 5 of an 8-row batch; the two 128-token rows ride in its empty rows
  # instead of paying for a 2-row batch of their own. Training keeps one length per batch.
  rng = np.random.default_rng(3)
  lengths = np.array([400] * 5 + [100] * 2)
  ids = [np.concatenate([[0], rng.integers(3, 300, n - 2), [2]]).astype(np.int32) for n in lengths]
  rows = [(512, [d]) for d in range(5)] + [(128, [5]), (128, [6])]
  sizes = {l: packing.batch_sizes(8, 1, 2) for l in (128, 512)}  # 8 and 4 rows
  (batch,) = packing.make_batches(ids, rows, sizes, PAD, pack=True)
  assert batch.shape == (8, 512) and sorted(batch.documents.tolist()) == list(range(7))
  for doc, r, c in zip(batch.documents, *batch.slots):
    start = batch.cls_index[r, c]
    assert np.array_equal(batch.input_ids[r, start:start + lengths[doc]], ids[doc])
  apart = packing.make_batches(ids, rows, sizes, PAD, pack=True, share_tails=False)
  assert [b.shape for b in apart] == [(8, 512), (4, 128)]


def batches_for(sizes, rows):
  out = []
  while rows > 0:
    out.append(packing.next_batch_size(sizes, rows))
    rows -= out[-1]
  return out


def test_batch_sizes_leave_the_fewest_rows_empty_then_make_the_fewest_calls():
  sizes = [32, 16, 8, 4]
  assert batches_for(sizes, 20) == [16, 4]  # not 32 with 12 empty rows
  assert batches_for(sizes, 30) == [32]  # 16 + 8 + 4 + 4 would leave the same 2 empty
  assert batches_for(sizes, 70) == [32, 32, 8]  # 4 + 4 would leave the same 2 empty
  assert batches_for(sizes, 1) == [4]
  rng = np.random.default_rng(0)
  for _ in range(500):
    full = int(2 ** rng.integers(0, 8))
    sizes = packing.batch_sizes(full, 1, int(2 ** rng.integers(0, 6)))
    rows = int(rng.integers(1, 3 * full + 2))
    chosen = batches_for(sizes, rows)
    whole, rest = divmod(rows, sizes[0])  # the one-size-that-fits rule, for comparison
    one_fit = [sizes[0]] * whole + ([next(s for s in reversed(sizes) if s >= rest)] if rest else [])
    assert sum(chosen) >= rows and all(s in sizes for s in chosen)
    assert sum(chosen) - rows <= sum(one_fit) - rows
    assert sum(chosen) - rows < sizes[-1] or sum(chosen) == sum(one_fit)
