"""Data sources: each is one module, named by `data.name` (a built-in here, or your own by dotted path); any
other plain name is a TFDS catalog dataset (pretrain/data/catalog.py).

A source module exports:
  load(config) -> Dataset
      Prepares (once) and opens both splits of the data `config.data` describes. Read a batch at a time
      (TokenStream or Records, pretrain/data/batching.py), so memory and start-up do not grow with the data.
and, where it has settings to check before anything is read:
  check(config)
      Raises ConfigError (one line naming the key and the fix).

Built-ins: markov (embedded Markov sequences), text (your text files), random (noise for speed benchmarks),
idx and npz (your images), catalog (TFDS). Text is tokenized by a streamed preparation into stored token
shards (prepare.py, store.py); images and the Markov sequences are TFDS builders. Either way the splits are
read through array_record data sources, and each process reads only the rows of its own batches.
"""
import copy
import dataclasses

import numpy as np

from pretrain import configlib, plugins
from pretrain.data import tokenizers
from pretrain.data.batching import (Joined, Mixture, Records, Rows, TokenStream, Windows, eval_batch, eval_batches,
                                    num_eval_batches, prefetched, train_batch)
from pretrain.errors import ConfigError, DataError

__all__ = ["Dataset", "load", "check", "token_bytes", "train_batch", "eval_batch", "eval_batches", "num_eval_batches", "prefetched",
           "TokenStream", "Records", "Joined", "Rows", "Windows", "Mixture"]


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: TokenStream | Records
  val: TokenStream | Records
  vocab_size: int  # Token ids are in [0, vocab_size); includes BOS and end-of-text where there are.
  num_classes: int = 0  # Labels are in [0, num_classes) when the data is labeled.
  tokenizer: tokenizers.ByteTokenizer | tokenizers.CharTokenizer | tokenizers.FileTokenizer | None = None
  metadata: dict = dataclasses.field(default_factory=dict)
  bos_id: int | None = None  # Every sequence starts with this id (the model predicts all of its real tokens).
  # What the token ids mean, for sources without a tokenizer (e.g. {"ids": "markov"}); see `vocabulary`.
  ids: dict | None = None
  label_names: tuple = ()  # Name of each label id, where the labels have names (reports and the console show them).
  sources: tuple = ()  # (NAME, Dataset) of each data.mixture source, scored as its own split NAME.

  @property
  def vocab(self) -> str | None:
    """The characters of a char-level dataset (id -> character), else None."""
    return getattr(self.tokenizer, "chars", None)

  @property
  def holds_images(self) -> bool:
    return isinstance(self.train, Records) and "image" in self.train.spec

  @property
  def padded(self) -> bool:
    """Rows of texts padded to one length (a token_mask marks the real tokens)."""
    return isinstance(self.train, Records) and "token_mask" in self.train.spec

  @property
  def image_channels(self) -> int:
    return int(self.train.spec["image"][0][-1])

  @property
  def vocabulary(self) -> dict | None:
    """What the token ids mean (None for images), saved with a run so that a fine-tuning run can check that it
    reads its text the way its pretrained backbone did."""
    if self.holds_images:
      return None
    if self.tokenizer is not None:
      return {**self.tokenizer.describe(), "vocab_size": self.vocab_size}
    if self.ids is not None:
      return {**self.ids, "vocab_size": self.vocab_size}
    return {"ids": "bytes"}

  def encode(self, text: str) -> np.ndarray:
    return (self.tokenizer or tokenizers.ByteTokenizer()).encode(text)

  def decode(self, ids) -> str:
    return (self.tokenizer or tokenizers.ByteTokenizer()).decode(ids)

  def describe(self) -> dict:
    """What a run saves of its data (DIR/dataset.json): enough to fine-tune from it without reading the data."""
    return {"name": self.name, "vocab_size": self.vocab_size, "num_classes": self.num_classes,
            "vocabulary": self.vocabulary, "label_names": list(self.label_names)}

  def label_name(self, label: int) -> str:
    return self.label_names[label] if label < len(self.label_names) else str(label)


def wants_labels(config) -> bool:
  """Whether the objective reads labels (sources holding both read their labeled form for it)."""
  return config.objective == "classification"


def source(config):
  """The module `data.name` names: a built-in source, yours by dotted path, or else a TFDS catalog dataset."""
  return plugins.load(plugins.SOURCE, config.data.name, fallback="catalog")


def check(config) -> None:
  """The source's own config checks, before anything is read."""
  check_source = getattr(source(config), "check", None)
  if check_source is not None:
    check_source(config)


def load(config) -> Dataset:
  """Prepares (once) and opens the dataset `config.data` names, both splits; with data.labels_per_class,
  the train split keeps only that many labeled examples of each class."""
  if config.data.mixture:
    from pretrain.data import mixture  # Loads each source through this function.
    return mixture.load(config)
  dataset = source(config).load(config)
  if not isinstance(dataset, Dataset):
    raise ConfigError(f"data.name={config.data.name}: its load(config) returned {type(dataset).__name__}, not a "
                      "pretrain.data.Dataset")
  if config.data.document_mask:
    dataset = documents(dataset)
  if config.data.labels_per_class:
    dataset = dataclasses.replace(dataset, train=labeled_subset(dataset, config.data.labels_per_class, config.seed))
  return dataset


def load_entry(config, overrides, where: str, reference: Dataset | None = None, reference_name: str = "") -> Dataset:
  """One source of an entry list (eval.extra, data.mixture): this run's data config with the entry's data.* values
  (never the mixture itself), loaded; its token ids must mean what `reference`'s do, where one is given."""
  entry = copy.deepcopy(config)
  entry.data.mixture = ()
  for key, value in overrides:
    configlib.set_value(entry, f"data.{key}", value)
  dataset = load(entry)
  if reference is not None and dataset.vocabulary != reference.vocabulary:
    raise DataError(f"{where}: its token ids mean other symbols than {reference_name} ({dataset.vocabulary} vs "
                    f"{reference.vocabulary}); use the same tokenizer (data.tokenizer=byte or file, not a char "
                    "vocabulary built from each text)")
  return dataset


def documents(dataset: Dataset) -> Dataset:
  """data.document_mask: both splits' batches mark which document each token is in."""
  end = getattr(dataset.tokenizer, "end_of_text", None)
  if not (isinstance(dataset.train, TokenStream) and isinstance(dataset.val, TokenStream)) or end is None:
    raise ConfigError(f"data.document_mask=true needs text read as a stream of documents that end with an "
                      f"end-of-text token, and {dataset.name} has none; use a folder of files or JSON lines "
                      "(one document each) or set --config.data.document_mask=false")
  return dataclasses.replace(dataset, train=dataclasses.replace(dataset.train, document_end=end),
                             val=dataclasses.replace(dataset.val, document_end=end))


def seq_len(dataset: Dataset, context: int) -> int:
  """Tokens the model reads per example: the context for streams, the record length otherwise."""
  if isinstance(dataset.train, (TokenStream, Mixture)):
    return context
  if "tokens" not in dataset.train.spec:
    return 1  # An image is one item: throughput counts images.
  length = dataset.train.spec["tokens"][0][0] - 1
  if length > context:
    raise ConfigError(f"sequences have {length} tokens but model.context={context}; "
                      f"set --config.model.context={length} or more")
  return length


def labeled_subset(dataset: Dataset, per_class: int, seed: int) -> Records:
  """A balanced subset of the train split, a pure function of (seed, per_class). Each class's examples are
  ranked by a (seed, class) permutation, so a larger budget keeps a smaller one's examples and adds more."""
  train = dataset.train
  if not isinstance(train, Records) or "label" not in train.spec:
    raise DataError(f"data.labels_per_class={per_class} needs labeled examples, but {dataset.name} has no label "
                    "feature; set --config.data.labels_per_class=0")
  labels = train.column("label")
  chosen = []
  for c in range(max(dataset.num_classes, int(labels.max()) + 1)):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise DataError(f"data.labels_per_class={per_class} but class {dataset.label_name(c)!r} of {dataset.name} has "
                      f"only {len(members)} "
                      f"training examples; use at most {len(members)} or 0 to keep all")
    chosen.append(np.random.default_rng([seed, c, 2]).permutation(members)[:per_class])
  return train.subset(np.sort(np.concatenate(chosen)))


def token_bytes(dataset) -> np.ndarray | None:
  """[vocab_size] UTF-8 bytes each token id covers, for text read by a tokenizer (None otherwise: images, the
  Markov source's symbols). Bits per byte compares models across tokenizers; ids past the tokenizer's (a
  padded vocabulary, a BOS) cover none."""
  if getattr(dataset, "tokenizer", None) is None:
    return None
  table = np.zeros(dataset.vocab_size, np.int32)
  own = dataset.tokenizer.token_bytes()[:dataset.vocab_size]
  table[:len(own)] = own
  return table
