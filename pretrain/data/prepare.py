"""Preparing a dataset once, in memory that does not depend on its size, whoever asks for it.

`ensure` is the one guard every preparation goes through: a folder is used only once it is complete
(built under a temporary name, then renamed; a killed preparation leaves only a temporary folder, which
the next one removes and redoes). Concurrent runs on one machine take a file lock, and correctness does
not rest on it: two that both build rename in turn, and the loser discards its copy. In a multi-process
job process 0 prepares while the others wait, then every process checks that it sees the result.

`text` streams a corpus (pretrain/data/corpus.py) through a tokenizer in batches into TFDS shards
(pretrain/data/store.py): the char vocabulary comes from a first pass, tokens from a second; a line of
progress (MB/s, tokens/s, ETA) every PROGRESS_S seconds.
"""
import contextlib
import fcntl
import os
import shutil
import socket
import sys
import time

import numpy as np

from pretrain.data import store, tokenizers
from pretrain.errors import DataError, PretrainError

BATCH_CHARS = 1 << 22  # Text per tokenizer call: big enough for its threads, small beside any memory.
BATCH_PIECES = 4096
PROGRESS_S = 10.0


def ensure(ready, make, where: str) -> None:
  """Calls make() unless ready(), once across the processes of a job and the runs of a machine."""
  import jax
  if jax.process_count() == 1:
    with _lock(where + ".lock"):
      if not ready():
        make()
    return
  from jax.experimental import multihost_utils
  failed = None
  if jax.process_index() == 0:
    try:
      with _lock(where + ".lock"):
        if not ready():
          make()
    except PretrainError as e:
      failed = e
  ok = int(multihost_utils.broadcast_one_to_all(np.int32(failed is None)))
  if failed is not None:
    raise failed
  if not ok:
    raise DataError(f"process 0 could not prepare {where}; its error line says why")
  if not ready():
    raise DataError(f"{where}, prepared by process 0, is not visible to process {jax.process_index()}; set "
                    "--config.data.data_dir to a folder every host shares, or run `python -m pretrain.prepare` "
                    "with the same config on every host first")


@contextlib.contextmanager
def _lock(path: str):
  """An exclusive flock where the file system grants one; where it does not, nothing (see ensure)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX)
    except OSError:
      pass
    yield


def atomically(folder: str, build) -> None:
  """build(tmp) fills a temporary folder that becomes `folder` only when it returns."""
  _remove_abandoned(folder)
  tmp = f"{folder}.partial-{socket.gethostname()}-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    build(tmp)
    os.rename(tmp, folder)
  except OSError:
    if not os.path.isdir(folder):
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _remove_abandoned(folder: str) -> None:
  """Temporary folders of preparations on this host whose process is gone."""
  parent, prefix = os.path.dirname(folder), os.path.basename(folder) + f".partial-{socket.gethostname()}-"
  for name in os.listdir(parent) if os.path.isdir(parent) else []:
    if name.startswith(prefix) and name[len(prefix):].isdigit() and not _alive(int(name[len(prefix):])):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


# ------------------------------------------------------------------------------------------------ text


def text(folder: str, corpora: dict, tokenizer: str, *, val_fraction: float | None = None,
         tokenizer_path: str | None = None, log=None) -> None:
  """Tokenizes `corpora` into the TFDS dataset `folder`; progress goes to `log` (stderr: stdout stays the
  caller's, e.g. the JSON line of pretrain.evaluate).

  corpora: {split: Corpus}, each its own split; or {None: Corpus} with `val_fraction`, which splits the one
  stream at int(n * (1 - val_fraction)) tokens, as nanoGPT does.
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  whole = None in corpora
  end_of_text = not (whole and corpora[None].single_document)
  chars = None
  if tokenizer == "char":
    progress = _Progress("vocabulary pass", corpora, log)
    chars = tokenizers.char_vocabulary(p for c in corpora.values() for p, _ in progress.pieces(c))
    if not chars:
      raise DataError(f"{_describe(corpora)} is empty; point --config.data.path at non-empty text")
  tok = tokenizers.make(tokenizer, chars=chars, path=tokenizer_path, end_of_text=end_of_text)

  def build(tmp):
    progress = _Progress("tokenizing", corpora, log)
    streams, documents = {}, 0
    for split, corpus in corpora.items():
      writer = store.ShardWriter(os.path.join(tmp, f"stream-{split or 'all'}"), tok.dtype)
      for ids, docs in _encode(tok, progress.pieces(corpus)):
        writer.write(ids)
        documents += docs
        progress.tokens += len(ids)
      writer.close()
      streams[split] = writer
    if whole:
      n = streams[None].num_tokens
      if not n:
        raise DataError(f"{_describe(corpora)} is empty; point --config.data.path at non-empty text")
      n_train = int(n * (1 - val_fraction))  # nanoGPT: int(n * 0.9)
      if n_train < 2 or n - n_train < 2:
        raise DataError(f"{_describe(corpora)} has {n} tokens: too few for a {1 - val_fraction:.0%}/"
                        f"{val_fraction:.0%} split; give more text or change --config.data.val_fraction")
      infos = store.carve(tmp, streams[None], {"train": (0, n_train), "validation": (n_train, n)})
      num_tokens = {"train": n_train, "validation": n - n_train}
    else:
      for split, writer in streams.items():
        if writer.num_tokens < 2:
          raise DataError(f"split {split!r} of {_describe(corpora)} has {writer.num_tokens} tokens; it needs text")
      infos = [info for split, w in streams.items() for info in store.carve(tmp, w, {split: (0, w.num_tokens)})]
      num_tokens = {split: w.num_tokens for split, w in streams.items()}
    metadata = dict(tokenizer=tok.kind, vocab=chars, vocab_size=tok.vocab_size, end_of_text=tok.end_of_text,
                    num_tokens=num_tokens, documents=documents, record_tokens=store.RECORD_TOKENS,
                    input_bytes=sum(c.total_bytes for c in corpora.values()), prepared_s=progress.elapsed())
    store.write_metadata(tmp, store.features(tok.dtype), infos, metadata, f"{_describe(corpora)}, {tok.kind} tokens")
    log(f"prepared {folder}: {sum(num_tokens.values()):,} tokens ({', '.join(f'{k} {v:,}' for k, v in num_tokens.items())})"
        f", {documents:,} documents, {progress.summary()}")

  atomically(folder, build)


def _encode(tok, pieces):
  """(ids, documents ended) per batch of pieces; each document ends with the end-of-text id, if any."""
  batch, ends, size = [], [], 0
  for piece, ends_document in pieces:
    batch.append(piece)
    ends.append(ends_document)
    size += len(piece)
    if size >= BATCH_CHARS or len(batch) >= BATCH_PIECES:
      yield _join(tok, batch, ends)
      batch, ends, size = [], [], 0
  if batch:
    yield _join(tok, batch, ends)


def _join(tok, batch, ends):
  ids = tok.encode_pieces(batch)
  if tok.end_of_text is None:
    return np.concatenate(ids) if ids else np.zeros(0, np.uint32), sum(ends)
  eot = np.array([tok.end_of_text], np.uint32)
  parts = [p for piece, end in zip(ids, ends) for p in ((piece, eot) if end else (piece,))]
  return np.concatenate(parts), sum(ends)


def _describe(corpora) -> str:
  return " + ".join(sorted({str(c.path) for c in corpora.values()}))


class _Progress:
  """A line every PROGRESS_S seconds: input MB done of the total, MB/s, tokens/s, ETA."""

  def __init__(self, what, corpora, log):
    self.what, self.corpora, self.log = what, corpora, log
    self.total = sum(c.total_bytes for c in corpora.values())
    self.unit, self.scale = ("examples", 1) if any(c.files == [] for c in corpora.values()) else ("MB", 1e6)
    self.start = self.last = time.perf_counter()
    self.done_before, self.tokens = 0, 0

  def pieces(self, corpus):
    for item in corpus.pieces():
      now = time.perf_counter()
      if now - self.last >= PROGRESS_S:
        self.last = now
        self._line(self.done_before + corpus.bytes_done, now - self.start)
      yield item
    self.done_before += corpus.total_bytes

  def _line(self, done, elapsed):
    rate = done / max(elapsed, 1e-9)
    eta = (self.total - done) / rate if rate else float("inf")
    tokens = f" | {self.tokens / elapsed / 1e6:.2f}M tokens/s" if self.tokens else ""
    u, k = self.unit, self.scale
    self.log(f"{self.what} {_describe(self.corpora)}: {done / k:,.0f} of {self.total / k:,.0f} {u} "
             f"({done / max(self.total, 1):.0%}) | {rate / k:,.1f} {u}/s{tokens} | eta {eta:.0f} s")

  def elapsed(self):
    return time.perf_counter() - self.start

  def summary(self):
    seconds = self.elapsed()
    return f"{seconds:.1f} s ({self.total / max(seconds, 1e-9) / self.scale:,.1f} {self.unit}/s)"
