"""Batches as pure functions of (seed, step, process): resuming at step k sees exactly the batches an
uninterrupted run sees from step k, and each process materialises only its own rows of a global batch.

A batch is a dict of numpy arrays with a leading batch axis:
  tokens      int32 [B, T+1]  inputs are tokens[:, :-1], next-token targets tokens[:, 1:]
  token_mask  float32 [B, T+1]  1 for real tokens, 0 for padding (the last eval window of a stream)
  image       uint8 [B, H, W, C]  pixel levels, or float32 after the `scale` preprocessing
  label       int32 [B]     class label, for labeled datasets
  mask        float32 [B]   1 for real examples, 0 for padding rows of the last eval batch
"""
import dataclasses
import functools
from typing import Callable

import numpy as np

from pretrain.errors import DataError


@dataclasses.dataclass(frozen=True)
class TokenStream:
  """One long token sequence (text): training reads random windows, evaluation consecutive ones.

  `tokens` is anything that slices into ids: an array, or a prepared dataset's stored stream
  (pretrain/data/store.py), which reads only the records a window overlaps."""
  tokens: object
  # With an end-of-text id, batches carry segment_ids (which document each token is in: an end-of-text ends
  # its document) and a document's first token is not a target (data.document_mask).
  document_end: int | None = None
  # Supervised fine-tuning: 1 where a token is a target (a completion and its end-of-text), 0 where it is
  # context only (a prompt); sliced as `tokens` is.
  targets: object = None

  def __len__(self):
    return len(self.tokens)


@dataclasses.dataclass(frozen=True)
class Mixture:
  """Training windows from several token streams in fixed proportions (data.mixture). Source s gives
  c_s(n) = floor(n W_s) - floor(n W_{s-1}) of the first n rows (W: the cumulative normalised weights), so every
  batch holds its share to within a row, and the counts so far are a closed form of the step (exact resume)."""
  names: tuple
  streams: tuple  # TokenStream per source.
  weights: tuple  # Normalised, summing to 1.

  def rows_before(self, n: int) -> np.ndarray:
    """[sources] rows each source gave among the first n rows of training."""
    # Rounded first: 0.7 + 0.2 is 0.8999999999999999 in floats, and 1000 rows of it must floor to 900.
    cumulative = np.floor(np.round(n * np.cumsum(self.weights[:-1]), 6)).astype(np.int64)
    bounds = np.concatenate([[0], cumulative, [n]])
    return np.diff(bounds)

  def tokens_given(self, step: int, batch_size: int, seq_len: int) -> dict:
    """{"tokens/NAME": tokens source NAME gave in the first `step` updates}."""
    rows = self.rows_before(step * batch_size)
    return {f"tokens/{name}": int(r) * seq_len for name, r in zip(self.names, rows)}


class Arrays:
  """Rows held in memory: {name: array with leading axis N}."""

  def __init__(self, fields: dict):
    self.fields = fields

  def __len__(self):
    return len(next(iter(self.fields.values())))

  def read(self, index) -> dict:
    return {k: v[index] for k, v in self.fields.items()}


class Rows:
  """Rows of a TFDS data source (array_record: random access), decoded per batch; only `keys` kept."""

  def __init__(self, source, keys=None, where: str = "the dataset"):
    self.source, self.keys, self.where = source, keys, where

  def __len__(self):
    return len(self.source)

  def read(self, index) -> dict:
    try:
      rows = self.source.__getitems__([int(i) for i in index])
    except Exception as e:  # array_record and TFDS raise their own types for damaged files.
      raise DataError(f"{self.where} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                      "delete that folder to prepare it again") from None
    if not rows:
      return {}
    return {k: _stack([r[k] for r in rows]) for k in (self.keys or rows[0]) if k in rows[0]}


def _stack(values) -> np.ndarray:
  if isinstance(values[0], (bytes, str)):  # Texts: an object array, not one padded to the longest.
    out = np.empty(len(values), object)
    out[:] = values
    return out
  return np.stack(values)


class Mapped:
  """Rows of `source` passed through fn(batch) -> batch (relabelling, a BOS column, tokenizing)."""

  def __init__(self, source, fn: Callable):
    self.source, self.fn = source, fn

  def __len__(self):
    return len(self.source)

  def read(self, index) -> dict:
    return self.fn(self.source.read(index))


class Windows:
  """Rows that are windows tokens[start:start + length] of a stream, each with a label."""

  def __init__(self, tokens, starts, labels, length: int):
    self.tokens, self.starts, self.labels, self.length = tokens, np.asarray(starts), np.asarray(labels), length

  def __len__(self):
    return len(self.starts)

  def read(self, index) -> dict:
    index = np.asarray(index)
    rows = [self.tokens[int(s):int(s) + self.length] for s in self.starts[index]]
    return {"tokens": np.stack(rows).astype(np.int32) if rows else np.zeros((0, self.length), np.int32),
            "label": self.labels[index].astype(np.int32)}


class Joined:
  """Streams one after another, sliced as one (a text's train and validation parts, for text_segments)."""

  def __init__(self, *parts):
    self.parts, self.starts = parts, np.cumsum([0, *map(len, parts)])

  def __len__(self):
    return int(self.starts[-1])

  def __getitem__(self, key: slice):
    start, stop, _ = key.indices(len(self))
    out = [p[max(start - a, 0):max(min(stop - a, len(p)), 0)] for p, a in zip(self.parts, self.starts)]
    return np.concatenate([np.asarray(o, np.int32) for o in out])


class Records:
  """Fixed-shape examples (sequences, images) with optional labels, read by index, a batch at a time.

  `source`: a dict of arrays, or anything with len() and read(index) -> dict (Arrays, Rows, Mapped,
  Windows); `index` keeps a subset of its rows, in that order; `transform` is applied to every batch.
  """

  def __init__(self, source, transform: Callable | None = None, index=None):
    self.source = Arrays(source) if isinstance(source, dict) else source
    # (batch, rngs) -> batch, applied to every batch (image preprocessing). rngs holds one generator per
    # training row, keyed by (seed, position in the stream), so random augmentation resumes exactly; None
    # in evaluation.
    self.transform = transform
    self.index = None if index is None else np.asarray(index, np.int64)

  def __len__(self):
    return len(self.source) if self.index is None else len(self.index)

  def read(self, positions) -> dict:
    """The rows at `positions` (of this subset), untransformed."""
    positions = np.asarray(positions, np.int64)
    return self.source.read(positions if self.index is None else self.index[positions])

  @functools.cached_property
  def spec(self) -> dict:
    """{field: (shape of one row, dtype)}, from the first row."""
    if not len(self):
      raise DataError("the dataset has no examples")
    return {k: (v.shape[1:], v.dtype) for k, v in self.read([0]).items()}

  def column(self, name: str, batch: int = 4096) -> np.ndarray:
    """One field of every row, read a batch at a time (labels, for choosing subsets), or from the source's own
    column where it keeps one (labeled texts keep their labels apart from the texts)."""
    kept = getattr(self.source, "column", lambda name: None)(name)
    if kept is not None:
      return kept if self.index is None else kept[self.index]
    return np.concatenate([self.read(np.arange(a, min(a + batch, len(self))))[name] for a in range(0, len(self), batch)])

  def subset(self, positions) -> "Records":
    positions = np.asarray(positions, np.int64)
    return Records(self.source, self.transform, positions if self.index is None else self.index[positions])

  def mapped(self, fn: Callable) -> "Records":
    """The same rows (and subset) with fn applied to every batch read."""
    return Records(Mapped(self.source, fn), self.transform, self.index)


def _rows(global_batch: int, process_index: int, process_count: int) -> slice:
  per_process = global_batch // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


def train_batch(split, step: int, *, seed: int, batch_size: int, seq_len: int,
                process_index: int = 0, process_count: int = 1) -> dict:
  """The process's rows of global training batch `step`."""
  rows = _rows(batch_size, process_index, process_count)
  rng = np.random.default_rng([seed, step])
  if isinstance(split, Mixture):
    # Each source's rows of this batch, in source order; the process reads only its own rows' windows.
    counts = split.rows_before((step + 1) * batch_size) - split.rows_before(step * batch_size)
    sources = np.repeat(np.arange(len(counts)), counts)
    starts = np.concatenate([np.random.default_rng([seed, step, s, 3]).integers(
        0, len(stream) - seq_len - 1, size=n, endpoint=True) for s, (stream, n) in enumerate(zip(split.streams, counts))])
    windows = [split.streams[s].tokens[a:a + seq_len + 1] for s, a in zip(sources[rows], starts[rows])]
    return _stream_batch(np.stack(windows).astype(np.int32), np.ones((len(windows), seq_len + 1), np.float32),
                         split.streams[0].document_end)
  if isinstance(split, TokenStream):
    starts = rng.integers(0, len(split) - seq_len - 1, size=batch_size, endpoint=True)[rows]
    tokens = np.stack([split.tokens[s:s + seq_len + 1] for s in starts]).astype(np.int32)
    token_mask = (np.ones(tokens.shape, np.float32) if split.targets is None else
                  np.stack([split.targets[s:s + seq_len + 1] for s in starts]).astype(np.float32))
    return _stream_batch(tokens, token_mask, split.document_end)
  # Records: epochs of permutations, each permutation a pure function of (seed, epoch).
  n = len(split)
  positions = np.arange(step * batch_size, (step + 1) * batch_size)[rows]
  index = np.empty(len(positions), dtype=np.int64)
  for epoch in np.unique(positions // n):
    perm = np.random.default_rng([seed, int(epoch), 1]).permutation(n)
    where = positions // n == epoch
    index[where] = perm[positions[where] % n]
  batch = split.read(index)
  if split.transform is not None:
    batch = split.transform(batch, [np.random.default_rng([seed, int(p), 2]) for p in positions])
  batch["mask"] = np.ones(len(index), np.float32)
  return batch


def _stream_batch(tokens, token_mask, document_end) -> dict:
  """Windows of a token stream as a batch; with document_end, each token's document (segment_ids: the number of
  end-of-text tokens before it, so an end-of-text belongs to the document it ends) and no target at a
  document's first token, which nothing before it in the window may predict."""
  batch = {"tokens": tokens, "token_mask": token_mask, "mask": np.ones(len(tokens), np.float32)}
  if document_end is not None:
    ends = (tokens[:, :-1] == document_end).astype(np.int32)
    segments = np.concatenate([np.zeros((len(tokens), 1), np.int32), np.cumsum(ends, axis=1, dtype=np.int32)], 1)
    batch["segment_ids"] = segments
    batch["token_mask"] = token_mask * np.concatenate(
        [np.ones((len(tokens), 1), np.float32), (segments[:, 1:] == segments[:, :-1]).astype(np.float32)], 1)
  return batch


def _eval_items(split, seq_len: int) -> int:
  """Evaluated items: consecutive windows of seq_len + 1 tokens overlapping by one, or records."""
  return -(-(len(split) - 1) // seq_len) if isinstance(split, TokenStream) else len(split)


def num_eval_batches(split, *, batch_size: int, seq_len: int, max_batches: int = 0) -> int:
  full = -(-_eval_items(split, seq_len) // batch_size)
  return min(full, max_batches) if max_batches else full


def eval_batch(split, b: int, *, batch_size: int, seq_len: int, max_batches: int = 0,
               process_index: int = 0, process_count: int = 1) -> dict:
  """The process's rows of eval batch `b` (of num_eval_batches); padding rows and tokens carry mask 0.

  With `max_batches`, the evaluated windows (or records) are spread evenly over the split rather than
  taken from its start, so a partial evaluation still sees all of it.
  """
  n_items = _eval_items(split, seq_len)
  total = num_eval_batches(split, batch_size=batch_size, seq_len=seq_len, max_batches=max_batches)
  positions = np.arange(b * batch_size, (b + 1) * batch_size)[_rows(batch_size, process_index, process_count)]
  if max_batches and total * batch_size < n_items:
    items, valid = np.linspace(0, n_items - 1, total * batch_size).round().astype(np.int64)[positions], None
  else:
    items, valid = np.where(positions < n_items, positions, 0), positions < n_items
  mask = np.ones(len(items), np.float32) if valid is None else valid.astype(np.float32)
  if isinstance(split, TokenStream):
    tokens = np.zeros((len(items), seq_len + 1), np.int32)
    token_mask = np.zeros((len(items), seq_len + 1), np.float32)
    for i, item in enumerate(items):
      window = split.tokens[int(item) * seq_len:int(item) * seq_len + seq_len + 1]
      tokens[i, :len(window)] = window
      token_mask[i, :len(window)] = mask[i]
      if split.targets is not None:
        token_mask[i, :len(window)] *= split.targets[int(item) * seq_len:int(item) * seq_len + seq_len + 1]
    batch = _stream_batch(tokens, token_mask, split.document_end)
  else:
    batch = split.read(items)
    if split.transform is not None:
      batch = split.transform(batch, None)
  batch["mask"] = mask
  return batch


def eval_batches(split, *, batch_size: int, seq_len: int, max_batches: int = 0,
                 process_index: int = 0, process_count: int = 1):
  """Yields eval_batch(b) for every b: the split once."""
  kw = dict(batch_size=batch_size, seq_len=seq_len, max_batches=max_batches, process_index=process_index,
            process_count=process_count)
  for b in range(num_eval_batches(split, batch_size=batch_size, seq_len=seq_len, max_batches=max_batches)):
    yield eval_batch(split, b, **kw)


def prefetched(make: Callable, keys, ahead: int):
  """make(key) for each key, in order; with ahead > 0 a background thread (grain's) builds up to `ahead`
  results before they are asked for, so host batches are built while the device computes. Each result is a
  pure function of its key, so prefetching changes nothing but the time."""
  if not ahead:
    return map(make, keys)
  import grain  # Imported here: only a loop that prefetches needs it.
  pipeline = grain.MapDataset.source(keys).map(make)
  return iter(pipeline.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=ahead)))
