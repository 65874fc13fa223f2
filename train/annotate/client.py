"""An OpenAI-compatible chat-completions endpoint (vLLM, SGLang, TGI, llama.cpp's server, a cloud
API), asked under a concurrency bound and a rate limit, with retries.

What the endpoint does wrong is the machine's, never a document's: a 429, 408 or 5xx, a timeout,
a dropped connection or a 200 whose body is not a chat completion is retried with exponential
backoff and jitter (a Retry-After is honoured, and pauses every request of the run, not only
the one that got it), and after --max_retries the run fails with EndpointFailed, which a rerun
finishes. Any other 4xx (a wrong model name, a bad key, a malformed request) is the user's to fix
and fails the run at once with EndpointRefused. The API key goes in a header and nowhere else.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import random
import time

import aiohttp

from pipeline import faults

log = logging.getLogger("koedu.annotate")
RETRYABLE_STATUS = {408, 409, 425, 429}  # and every 5xx
BODY_CHARS = 300  # of an error response quoted in a message


class EndpointFailed(faults.EndpointFault):
  """The endpoint failed a request after every retry: rerun to finish (exit 1)."""


class EndpointRefused(faults.UsageError):
  """The endpoint refused a request in a way retrying cannot mend (4xx): fix the setting it names
  (exit 2)."""


class _Transient(Exception):
  def __init__(self, what: str, retry_after: float | None = None):
    super().__init__(what)
    self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class Answer:
  text: str
  prompt_tokens: int
  completion_tokens: int
  finish_reason: str | None


@dataclasses.dataclass
class Counters:
  requests: int = 0  # attempts sent
  retries: int = 0
  by_fault: dict = dataclasses.field(default_factory=dict)  # "429", "500", "timeout", ... -> count
  waited_seconds: float = 0.0  # in backoff


class RateLimit:
  """Token bucket of one request, refilled every 60 / requests_per_minute seconds: attempts are
  spaced evenly, never in a burst. A Retry-After pauses it for everyone."""

  def __init__(self, requests_per_minute: float):
    self._interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
    self._next = 0.0
    self._paused_until = 0.0
    self._lock = asyncio.Lock()

  def pause(self, seconds: float) -> None:
    self._paused_until = max(self._paused_until, time.monotonic() + seconds)

  async def acquire(self) -> None:
    while True:
      async with self._lock:
        now = time.monotonic()
        paused = self._paused_until - now
        if paused <= 0:  # a slot; after a pause, slots are handed out again one interval apart
          start = max(now, self._next)
          self._next = start + self._interval
      if paused > 0:
        await asyncio.sleep(paused)
        continue
      if start > now:
        await asyncio.sleep(start - now)
      return


def retry_after(value: str | None) -> float | None:
  """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
  if not value:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
  except (TypeError, ValueError):
    return None


class Endpoint:
  def __init__(self, config, api_key: str | None):
    self.config = config
    self.counters = Counters()
    self._headers = {"Content-Type": "application/json"}
    if api_key:
      self._headers["Authorization"] = f"Bearer {api_key}"
    self._limit = RateLimit(config.requests_per_minute)
    self._session: aiohttp.ClientSession | None = None

  async def __aenter__(self) -> "Endpoint":
    # One connection per request in flight, kept alive between requests.
    connector = aiohttp.TCPConnector(limit=self.config.concurrency, limit_per_host=self.config.concurrency)
    self._session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
        headers=self._headers)
    return self

  async def __aexit__(self, *exc) -> None:
    await self._session.close()

  def _backoff(self, attempt: int) -> float:
    c = self.config
    return min(c.max_backoff_seconds, c.backoff_seconds * 2 ** (attempt - 1)) * (0.5 + random.random())

  async def ask(self, content: str) -> Answer:
    """One chat completion for one user message, retried until it comes or retries run out."""
    c = self.config
    body = json.dumps({"model": c.llm, "messages": [{"role": "user", "content": content}],
                       "temperature": c.temperature, "max_tokens": c.max_tokens})
    for attempt in range(c.max_retries + 1):
      await self._limit.acquire()
      self.counters.requests += 1
      try:
        return await self._post(body)
      except _Transient as fault:
        kind, after = str(fault), fault.retry_after
      except asyncio.TimeoutError:
        kind, after = "timeout", None
      except (aiohttp.ClientError, ConnectionError) as err:  # refused, reset, dropped mid-answer
        kind, after = f"connection: {type(err).__name__}", None
      key = kind.split(":", 1)[0]
      self.counters.by_fault[key] = self.counters.by_fault.get(key, 0) + 1
      if attempt == c.max_retries:
        raise EndpointFailed(f"{c.url} failed {attempt + 1} times in a row; last: {kind}. The "
                             f"answers so far are written: rerun the same command to finish")
      wait = after if after is not None else self._backoff(attempt + 1)
      if after is not None:
        self._limit.pause(after)
      self.counters.retries += 1
      self.counters.waited_seconds += wait
      log.debug("%s; retry %d in %.2fs", kind, attempt + 1, wait)
      await asyncio.sleep(wait)
    raise AssertionError("unreachable")

  async def _post(self, body: str) -> Answer:
    async with self._session.post(self.config.url, data=body) as response:
      text = await response.text(errors="replace")
      status = response.status
      if status == 200:
        return _answer(text)
      detail = f"HTTP {status}: {text[:BODY_CHARS]!r}"
      if status in RETRYABLE_STATUS or status >= 500:
        raise _Transient(f"{status}: {detail}", retry_after(response.headers.get("Retry-After")))
      raise EndpointRefused(f"{self.config.url} refused the request ({detail}); check --endpoint, "
                            f"--llm {self.config.llm!r} and the API key in ${self.config.api_key_env}")


def _answer(body: str) -> Answer:
  """A 200's chat completion; a body that is not one is the endpoint's fault (retried)."""
  try:
    data = json.loads(body)
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    if not isinstance(text, str):
      raise TypeError(f"content is a {type(text).__name__}")
  except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
    raise _Transient(f"malformed: a 200 that is not a chat completion ({type(err).__name__}: "
                     f"{err}): {body[:BODY_CHARS]!r}") from None
  usage = data.get("usage") or {}
  return Answer(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                choice.get("finish_reason"))
