"""Your text (data.name=text): a text file (one document), a folder of text files (one document each), or
.jsonl / .jsonl.gz / .jsonl.zst / .parquet files or folders (one document per record or row), tokenized once by
a streamed preparation into stored token shards (pretrain/data/prepare.py, store.py).

With data.text_segments=K the text becomes a classification task: K equal contiguous parts, windows labeled by
their part. The helpers for prepared token folders here serve the TFDS catalog's texts too (catalog.py).
"""
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import Dataset, Joined, Records, TokenStream, Windows, builders, corpus, prepare, store, tokenizers
from pretrain.errors import ConfigError, DataError

TEXT_FORMAT = 2  # Part of a prepared text folder's name: 2 stores uint16/uint32 ids and end-of-text tokens.


def check(config) -> None:
  d = config.data
  if d.path and not os.path.exists(d.path):
    raise ConfigError(f"data.path={d.path!r} does not exist; set --config.data.path to a text file or directory")


def load(config) -> Dataset:
  d = config.data
  if not d.path:
    raise DataError("data.name=text needs a file or directory: set --config.data.path=PATH")
  folder = _prepare(d, builders.default_data_dir(d.data_dir))
  dataset = open_prepared(f"text:{d.path}", folder, ("train", "validation"), tokenizer_path(d))
  if d.text_segments:
    whole = Joined(dataset.train.tokens, dataset.val.tokens)
    splits = segment_windows(whole, d.text_segments, config.model.context + 1, d.val_fraction)
    dataset = dataclasses.replace(dataset, train=splits[0], val=splits[1], num_classes=d.text_segments)
  return dataset


def _prepare(d, data_dir: str) -> str:
  """The folder of the prepared dataset `d` names, preparing it first if needed."""
  if not os.path.exists(d.path):
    raise DataError(f"data path {d.path!r} does not exist; set --config.data.path to a text, .jsonl or .parquet "
                    "file or a folder of them")
  path = os.path.realpath(d.path)
  texts = corpus.Corpus(path, d.text_field, binary=d.tokenizer == "byte")
  tokenizer_file = tokenizer_path(d)
  spec = dict(path=path, fingerprint=corpus.fingerprint(texts.files), tokenizer=d.tokenizer,
              tokenizer_digest=tokenizer_file and tokenizers.digest(tokenizer_file), text_field=texts.text_field,
              val_fraction=d.val_fraction, format=TEXT_FORMAT)
  folder = builders.folder_name("text", data_dir, spec)
  prepare.ensure(lambda: os.path.isdir(folder), lambda: prepare.text(
      folder, {None: texts}, d.tokenizer, val_fraction=d.val_fraction, tokenizer_path=tokenizer_file), folder)
  return folder


def open_prepared(name, folder, splits, tokenizer_file) -> Dataset:
  """A prepared token dataset's splits as streams, and the tokenizer its ids come from."""
  try:
    builder = tfds.builder_from_directory(folder)
    meta = dict(builder.info.metadata)
    streams = [TokenStream(store.split_tokens(builder, s)) for s in splits]
  except Exception as e:
    raise DataError(f"cannot read the prepared dataset {folder} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                    "delete that folder to prepare it again") from None
  for stream in streams:
    stream.tokens[len(stream) - 1:]  # The last record: a truncated shard fails here, not mid-training.
  tokenizer = tokenizers.make(meta["tokenizer"], chars=meta.get("vocab"), path=tokenizer_file,
                              end_of_text=meta.get("end_of_text") is not None)
  if tokenizer.end_of_text != meta.get("end_of_text") or tokenizer.vocab_size != meta["vocab_size"]:
    raise DataError(f"{folder} was prepared with another tokenizer; delete that folder to prepare it again")
  return Dataset(name, *streams, vocab_size=meta["vocab_size"], tokenizer=tokenizer, metadata=meta)


def tokenizer_path(d) -> str | None:
  """data.tokenizer_path for tokenizer="file" (its files' content is part of the dataset's identity)."""
  if d.tokenizer not in tokenizers.KINDS:
    raise ConfigError(f"unknown data.tokenizer={d.tokenizer!r}; use char, byte or file")
  if d.tokenizer != "file":
    if d.tokenizer_path:
      raise ConfigError(f"data.tokenizer_path is set but data.tokenizer={d.tokenizer!r}; "
                        "set --config.data.tokenizer=file to use it")
    return None
  if not d.tokenizer_path:
    tokenizers.files(d.tokenizer_path)  # The error that says what to set.
  return os.path.realpath(d.tokenizer_path)


def segment_windows(tokens, segments: int, length: int, val_fraction: float) -> list[Records]:
  """A text as a classification task: cut into `segments` equal contiguous parts, each cut into
  non-overlapping windows of `length` tokens labeled by their part; the last val_fraction of each part's
  windows validate. (Tiny shakespeare's parts are different plays: the label is which one.) `tokens` is
  anything that slices into ids; windows are read when a batch asks for them."""
  bounds = np.linspace(0, len(tokens), segments + 1).astype(int)
  train, val = ([], []), ([], [])
  for label, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
    n = (end - start) // length
    n_val = int(round(n * val_fraction))
    if n - n_val < 1 or n_val < 1:
      raise DataError(f"data.text_segments={segments}: a part of {end - start} tokens has {n} windows of {length}; "
                      "use fewer segments, a shorter model.context or more text")
    starts = start + length * np.arange(n)
    for (split_starts, split_labels), part in ((train, starts[:n - n_val]), (val, starts[n - n_val:])):
      split_starts.append(part)
      split_labels.append(np.full(len(part), label, np.int32))
  return [Records(Windows(tokens, np.concatenate(s), np.concatenate(y), length)) for s, y in (train, val)]
