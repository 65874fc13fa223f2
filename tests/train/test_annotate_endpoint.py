"""train.annotate when the endpoint fails, throttles or refuses, and when a rerun changes settings."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest

from bench import annotate_corpus
from tests.train.test_annotate import annotate, outputs, server  # noqa: F401 (fixture)


@pytest.fixture
def corpus(tmp_path):
  path = str(tmp_path / "corpus")
  annotate_corpus.write(path, per_shard=20, shards=3, broken=0)
  return path


def test_endpoint_down_fails_the_run_and_a_rerun_finishes(tmp_path, corpus, server, caplog):
  s = server(rate=1.0, kinds=("500",), max_faults_in_a_row=10**9)
  out = str(tmp_path / "out")
  with caplog.at_level(logging.ERROR):
    assert annotate(corpus, out, s.url, 60, "--max_retries", "3") == 1
  assert "failed 4 times in a row; last: 500" in caplog.text and "rerun" in caplog.text
  annotated, errors = outputs(out) if os.path.isdir(os.path.join(out, "annotations")) else ([], [])
  assert not errors  # an endpoint failure never lands a document in errors/
  stats = json.loads(open(os.path.join(out, "stats.json")).read())
  assert not stats["complete"] and stats["errored"] == 0
  assert stats["this_run"]["requests"] >= stats["this_run"]["faults"]["500"] >= 4  # a failed run says what it did
  s.faults.rate = 0.0  # the endpoint recovers
  assert annotate(corpus, out, s.url, 60) == 0
  annotated, errors = outputs(out)
  assert len(annotated) == 60 and not errors


def test_retry_after_is_honoured(tmp_path, corpus, server):
  s = server(rate=1.0, kinds=("429",), max_faults_in_a_row=1, retry_after="0.3")
  assert annotate(corpus, str(tmp_path / "out"), s.url, 6, "--concurrency", "2", "--backoff_seconds", "0") == 0
  gaps = [times[1] - times[0] for times in s.times.values()]
  assert len(gaps) == 6 and min(gaps) >= 0.29, gaps  # not the 0 s backoff: the server's word


def test_requests_per_minute_spaces_requests(tmp_path, corpus, server):
  s = server()
  started = time.monotonic()
  assert annotate(corpus, str(tmp_path / "out"), s.url, 11, "--concurrency", "8",
                  "--requests_per_minute", "600") == 0
  times = sorted(t for ts in s.times.values() for t in ts)
  # 10 gaps of 0.1 s between 11 requests, with 8 workers that would send them at once.
  assert len(times) == 11 and times[-1] - times[0] >= 0.9
  assert time.monotonic() - started < 10


def test_concurrency_bounds_requests_in_flight(tmp_path, corpus, server):
  s = server(latency=0.2)
  assert annotate(corpus, str(tmp_path / "out"), s.url, 30, "--concurrency", "3") == 0
  starts = sorted(t for ts in s.times.values() for t in ts)
  # With 0.2 s answers and 3 in flight, no 0.2 s window holds more than 3 starts.
  assert max(sum(1 for t in starts if a <= t < a + 0.19) for a in starts) <= 3


def test_reruns_with_other_settings_are_refused_by_name(tmp_path, corpus, server, caplog):
  s = server()
  out = str(tmp_path / "out")
  assert annotate(corpus, out, s.url, 20) == 0
  asked = sum(s.requests.values())
  prompt = tmp_path / "prompt.txt"
  prompt.write_text("Rate this: {text}\nEducational score: <points>")
  for extra, name in ((["--seed", "1"], "seed="), (["--prompt", str(prompt)], "prompt="),
                      (["--max_chars", "100"], "max_chars="), (["--sample", "10"], "--sample 10")):
    caplog.clear()
    with caplog.at_level(logging.ERROR):
      assert annotate(corpus, out, s.url, 20, *extra) == 2, extra
    assert name in caplog.text, caplog.text
  caplog.clear()
  from train.annotate.__main__ import main
  args = ["--input", os.path.join(corpus, "*"), "--output", out, "--endpoint", s.url, "--sample", "20"]
  with caplog.at_level(logging.ERROR):
    assert main([*args, "--llm", "another-llm"]) == 2
  assert "llm='test-llm', not 'another-llm'" in caplog.text
  assert sum(s.requests.values()) == asked  # refused before any request
  # A larger sample extends the output: only the new documents are asked.
  assert annotate(corpus, out, s.url, 35) == 0
  assert sum(s.requests.values()) == asked + 15
  assert len(outputs(out)[0]) == 35


def test_api_key_from_the_environment_never_a_log_line(tmp_path, corpus, server, monkeypatch, capfd):
  secret = "sk-test-7f3a9c"
  s = server(api_key=secret, model="test-llm")
  out = str(tmp_path / "out")
  assert annotate(corpus, out, s.url, 5) == 2  # no key: the 401 fails the run at once, by name
  assert 1 <= s.refused <= 5  # the documents in flight, none retried
  monkeypatch.setenv("LLM_KEY", secret)
  assert annotate(corpus, out, s.url, 5, "--api_key_env", "LLM_KEY") == 0
  captured = capfd.readouterr()
  assert secret not in captured.out + captured.err
  for root, _, names in os.walk(out):
    for name in names:
      assert secret.encode() not in open(os.path.join(root, name), "rb").read()


def test_a_model_the_endpoint_does_not_serve_is_refused(tmp_path, corpus, server, caplog):
  s = server(model="served-llm")
  with caplog.at_level(logging.ERROR):
    assert annotate(corpus, str(tmp_path / "out"), s.url, 5) == 2
  assert "HTTP 404" in caplog.text and "--llm 'test-llm'" in caplog.text
  assert 1 <= s.refused <= 5  # once per document at most: retrying cannot mend it


def test_a_pause_does_not_end_in_a_burst():
  import asyncio

  from train.annotate.client import RateLimit

  async def go():
    limit = RateLimit(requests_per_minute=600)  # a slot every 0.1 s
    limit.pause(0.3)  # a Retry-After
    started = time.monotonic()

    async def one():
      await limit.acquire()
      return time.monotonic() - started
    return sorted(await asyncio.gather(*(one() for _ in range(4))))
  times = asyncio.run(go())
  # The k-th slot comes no earlier than the pause's end plus k intervals (a loaded machine can
  # only make it later): no burst when the pause ends.
  assert all(t >= 0.3 + 0.1 * k - 0.01 for k, t in enumerate(times)), times


@pytest.mark.parametrize("answer, score", [
    ("The page teaches fractions.\nEducational score: 3", 3),
    ("**Score:** 4", 4), ("**Score**: 4", 4), ("Educational Score: **5**", 5),
    ("점수: 2", 2), ("교육 점수：5점", 5), ("score = 5.", 5), ("Educational score: <1>", 1),
    ("Score: 4/5", 4), ("Educational score:  0\n", 0),
    ("I first thought score: 2, but on reflection... Educational score: 4", 4),  # the last one
    ("Educational score: 3 ... Educational score: 10", None),  # the last is off the scale
    ("score: 3.5", None), ("score: 6", None), ("A fine page.", None), (None, None),
])
def test_the_last_stated_score_is_read(answer, score):
  from train.annotate.prompt import parse_score
  assert parse_score(answer) == score


def test_a_prompt_without_one_text_placeholder_is_refused(tmp_path, corpus, server, caplog):
  s = server()
  prompt = tmp_path / "prompt.txt"
  prompt.write_text("Rate this page from 0 to 5.")
  with caplog.at_level(logging.ERROR):
    assert annotate(corpus, str(tmp_path / "out"), s.url, 5, "--prompt", str(prompt)) == 2
  assert "{text} exactly once" in caplog.text and not os.path.exists(tmp_path / "out")
  from train.annotate import prompt as prompts
  packaged = prompts.load(None)
  assert "Educational score: <total points>" in packaged.template
  assert packaged.render("[doc 7] 가나다", 2000).rstrip().endswith('"Educational score: <total points>"')
  assert packaged.template.index("{text}") > len(packaged.template) // 2  # the rubric is a shared prefix


def test_a_glob_that_matches_nothing_is_refused_and_claims_nothing(tmp_path, server, caplog):
  s = server()
  out = tmp_path / "out"
  with caplog.at_level(logging.ERROR):
    assert annotate(str(tmp_path / "nowhere"), str(out), s.url, 5) == 2
  assert "matches no file" in caplog.text and not out.exists()  # a corrected --input is not refused
