"""data.mixture: several text sources trained on in fixed proportions.

Each entry "NAME:KEY=VALUE,...,weight=W" is this run's data config with the entry's data.* values, loaded as any
single source is (prepared once, read a window at a time, so memory and start-up stay flat however large the
sources). Training batches draw each source's share of their rows (batching.Mixture, a pure function of the seed
and the step); the validation split is all sources' validation text, and each source's is scored on its own as
split NAME (Dataset.sources).
"""
import dataclasses

from pretrain import configlib
from pretrain.data import Dataset, Joined, Mixture, TokenStream, load_entry
from pretrain.errors import ConfigError, DataError


def load(config) -> Dataset:
  entries = configlib.mixture(config)
  total = sum(weight for _, _, weight in entries)
  sources = []
  for name, overrides, weight in entries:
    if weight / total * config.train.batch_size < 1:
      raise ConfigError(f"data.mixture {name!r}: weight {weight} gives it {weight / total:.4f} of each batch of "
                        f"{config.train.batch_size} rows, under one row; raise its weight or train.batch_size")
    reference_name, reference = sources[0] if sources else ("", None)  # The first source's ids are the run's.
    dataset = load_entry(config, overrides, f"data.mixture {name!r}", reference, f"{reference_name!r}'s")
    if not isinstance(dataset.train, TokenStream) or dataset.train.targets is not None:
      raise DataError(f"data.mixture {name!r}: {dataset.name} is not text read as a token stream (labeled or "
                      "prompt/completion records are not mixed); mix text sources")
    if len(dataset.train) <= config.model.context + 1:
      raise DataError(f"data.mixture {name!r}: its training text has {len(dataset.train)} tokens, fewer than one "
                      f"window of model.context={config.model.context} + 1; give it more text")
    sources.append((name, dataset))
  first = sources[0][1]
  train = Mixture(tuple(n for n, _ in sources), tuple(d.train for _, d in sources),
                  tuple(w / total for _, _, w in entries))
  val = TokenStream(Joined(*[d.val.tokens for _, d in sources]), document_end=first.val.document_end)
  return dataclasses.replace(first, name="mixture:" + ",".join(n for n, _ in sources), train=train, val=val,
                             sources=tuple(sources))
