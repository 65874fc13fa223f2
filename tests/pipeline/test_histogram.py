"""score_histogram.png: what the picture shows is what stats.json says."""
import io

import numpy as np
from PIL import Image, ImageColor

from pipeline import histogram, outputs


def report(counts, scores):
  fine = outputs.score_histogram(scores) if len(scores) else [0] * (len(outputs.SCORE_BINS) - 1)
  return {"int_score_histogram": {str(i): n for i, n in enumerate(counts)},
          "score_histogram": {"bin_edges": [float(e) for e in outputs.SCORE_BINS], "counts": fine},
          "scored": sum(counts), "kept": sum(counts[3:])}


def picture(rep, threshold=3):
  image = Image.open(io.BytesIO(histogram.png(rep, threshold)))
  assert image.format == "PNG" and image.size == histogram.SIZE
  return image.convert("RGB")


def bar_colour(image, rep, score, threshold=3):
  """The pixel halfway up int_score `score`'s bar."""
  counts = [rep["int_score_histogram"][str(i)] for i in range(6)]
  panel = histogram._Panel(None, histogram.LEFT_PANEL, (-0.6, 5.6), max(counts), None)
  return image.getpixel((round(panel.x(score)), round(panel.y(counts[score] / 2))))


def test_bars_are_as_tall_as_the_counts_and_coloured_by_the_threshold():
  counts = [8, 69, 62, 29, 13, 11]
  rep = report(counts, np.random.default_rng(0).uniform(-1, 6, 192))
  image = picture(rep)
  for score in range(6):
    expected = histogram.KEPT if score >= 3 else histogram.DROPPED
    assert bar_colour(image, rep, score) == ImageColor.getrgb(expected)
  # Above the tallest bar's top there is no bar: the heights follow the counts.
  panel = histogram._Panel(None, histogram.LEFT_PANEL, (-0.6, 5.6), 69, None)
  assert image.getpixel((round(panel.x(1)), round(panel.y(69)) - 3)) != ImageColor.getrgb(histogram.DROPPED)
  assert image.getpixel((round(panel.x(1)), round(panel.y(68)))) == ImageColor.getrgb(histogram.DROPPED)


def test_threshold_moves_the_colours_and_the_dashed_line():
  counts = [5, 5, 5, 5, 5, 5]
  rep = report(counts, np.linspace(0, 5, 30))
  image = picture(rep, threshold=2)
  assert bar_colour(image, rep, 2, threshold=2) == ImageColor.getrgb(histogram.KEPT)
  assert bar_colour(image, rep, 1, threshold=2) == ImageColor.getrgb(histogram.DROPPED)
  fine = histogram._Panel(None, histogram.RIGHT_PANEL, (-1.35, 6.35), 1, None)
  line = [image.getpixel((round(fine.x(1.5)), y)) for y in range(histogram.TOP + 1, histogram.BOTTOM)]
  assert ImageColor.getrgb(histogram.LINE) in line


def test_empty_and_corpus_sized_counts_draw():
  picture(report([0] * 6, []))
  rep = report([4 * 10**9, 3 * 10**9, 2 * 10**9, 10**9, 5 * 10**8, 10**8], [])
  picture(rep)
  assert histogram._count(1_234_567_890) == "1.23B" and histogram._count(999_999) == "999,999"
  assert histogram._nice_ticks(4.32e9)[:3] == [0, 10**9, 2 * 10**9]
