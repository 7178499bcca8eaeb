"""Uniform noise (data.name=random) for speed benchmarks: nothing to prepare or learn."""
import numpy as np

from pretrain.data import Dataset, TokenStream


def load(config) -> Dataset:
  vocab = config.model.vocab_size or 256
  rng = np.random.default_rng(config.seed)
  splits = [TokenStream(rng.integers(0, vocab, config.data.random_tokens, dtype=np.int32)) for _ in range(2)]
  return Dataset(config.data.name, *splits, vocab_size=vocab, ids={"ids": "random"})
