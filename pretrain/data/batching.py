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
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TokenStream:
  """One long token sequence (text): training reads random windows, evaluation consecutive ones."""
  tokens: np.ndarray  # int32 [N]

  def __len__(self):
    return len(self.tokens)


@dataclasses.dataclass(frozen=True)
class Records:
  """Fixed-shape examples (sequences, images) with optional labels."""
  fields: dict  # name -> array with leading axis N
  # (batch, rngs) -> batch, applied to every batch (image preprocessing). rngs holds one generator per
  # training row, keyed by (seed, position in the stream), so random augmentation resumes exactly; None
  # in evaluation.
  transform: Callable | None = None

  def __len__(self):
    return len(next(iter(self.fields.values())))


def _rows(global_batch: int, process_index: int, process_count: int) -> slice:
  per_process = global_batch // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


def train_batch(split, step: int, *, seed: int, batch_size: int, seq_len: int,
                process_index: int = 0, process_count: int = 1) -> dict:
  """The process's rows of global training batch `step`."""
  rows = _rows(batch_size, process_index, process_count)
  rng = np.random.default_rng([seed, step])
  if isinstance(split, TokenStream):
    starts = rng.integers(0, len(split) - seq_len - 1, size=batch_size, endpoint=True)[rows]
    tokens = np.stack([split.tokens[s:s + seq_len + 1] for s in starts])
    return {"tokens": tokens, "token_mask": np.ones(tokens.shape, np.float32),
            "mask": np.ones(len(tokens), np.float32)}
  # Records: epochs of permutations, each permutation a pure function of (seed, epoch).
  n = len(split)
  positions = np.arange(step * batch_size, (step + 1) * batch_size)[rows]
  index = np.empty(len(positions), dtype=np.int64)
  for epoch in np.unique(positions // n):
    perm = np.random.default_rng([seed, int(epoch), 1]).permutation(n)
    where = positions // n == epoch
    index[where] = perm[positions[where] % n]
  batch = {k: v[index] for k, v in split.fields.items()}
  if split.transform is not None:
    batch = split.transform(batch, [np.random.default_rng([seed, int(p), 2]) for p in positions])
  batch["mask"] = np.ones(len(index), np.float32)
  return batch


def num_eval_batches(split, *, batch_size: int, seq_len: int, max_batches: int = 0) -> int:
  n_items = -(-(len(split) - 1) // seq_len) if isinstance(split, TokenStream) else len(split)
  full = -(-n_items // batch_size)
  return min(full, max_batches) if max_batches else full


def eval_batches(split, *, batch_size: int, seq_len: int, max_batches: int = 0,
                 process_index: int = 0, process_count: int = 1):
  """Yields fixed-shape batches covering the split once; padding rows and tokens carry mask 0.

  With `max_batches`, the evaluated windows (or records) are spread evenly over the split rather than
  taken from its start, so a partial evaluation still sees all of it.
  """
  if isinstance(split, TokenStream):
    starts = np.arange(0, len(split) - 1, seq_len)
  else:
    starts = np.arange(len(split))
  total = num_eval_batches(split, batch_size=batch_size, seq_len=seq_len, max_batches=max_batches)
  if max_batches and total * batch_size < len(starts):
    starts = starts[np.linspace(0, len(starts) - 1, total * batch_size).round().astype(int)]
  rows = _rows(batch_size, process_index, process_count)
  for b in range(total):
    chunk = starts[b * batch_size:(b + 1) * batch_size]
    valid = np.zeros(batch_size, np.float32)
    valid[:len(chunk)] = 1
    chunk = np.pad(chunk, (0, batch_size - len(chunk)))
    if isinstance(split, TokenStream):
      tokens = np.zeros((batch_size, seq_len + 1), np.int32)
      token_mask = np.zeros((batch_size, seq_len + 1), np.float32)
      for i, s in enumerate(chunk):
        window = split.tokens[s:s + seq_len + 1]
        tokens[i, :len(window)] = window
        token_mask[i, :len(window)] = valid[i]
      batch = {"tokens": tokens, "token_mask": token_mask}
    else:
      batch = {k: v[chunk] for k, v in split.fields.items()}
      if split.transform is not None:
        batch = split.transform(batch, None)
    batch["mask"] = valid
    yield {k: v[rows] for k, v in batch.items()}
