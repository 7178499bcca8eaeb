"""Your text (data.name=text): a text file (one document), a folder of text files (one document each), or
.jsonl / .csv / .tsv / .parquet files or folders (one document per record or row; see corpus.py), tokenized once
by a streamed preparation into stored token shards (pretrain/data/prepare.py, store.py). data.val_path names a
second path that validates whole; without it the last data.val_fraction of the tokens does.

For objective=classification: with data.label_field each record is one labeled example (labeled.py); with
data.text_segments=K the text is cut into K equal contiguous parts, windows labeled by their part. The helpers
for prepared token folders here serve the TFDS catalog's texts too (catalog.py).
"""
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import (Dataset, Joined, Records, TokenStream, Windows, builders, corpus, labeled, prepare, store,
                           tokenizers, wants_labels)
from pretrain.errors import ConfigError, DataError

TEXT_FORMAT = 2  # Part of a prepared text folder's name: 2 stores uint16/uint32 ids and end-of-text tokens.


def check(config) -> None:
  d = config.data
  for key in ("path", "val_path"):
    if d[key] and not os.path.exists(d[key]):
      raise ConfigError(f"data.{key}={d[key]!r} does not exist; set --config.data.{key} to a text file or directory")
  if d.decode_errors not in corpus.DECODE_ERRORS:
    raise ConfigError(f"data.decode_errors={d.decode_errors!r} is not one of {corpus.DECODE_ERRORS}")
  if d.label_field and d.text_segments and wants_labels(config):
    raise ConfigError("data.label_field and data.text_segments both label the text; set one of them to its default")
  if d.val_path and d.text_segments:
    raise ConfigError("data.text_segments validates on each part's last windows, not on data.val_path; unset one")


def load(config) -> Dataset:
  d = config.data
  if not d.path:
    raise DataError("data.name=text needs a file or directory: set --config.data.path=PATH")
  if d.label_field and wants_labels(config):
    return labeled.load(config, f"text:{d.path}", tokenizer_path(d))
  if d.prompt_field or d.completion_field or d.messages_field:
    from pretrain.data import sft  # It reads this module's tokenizer_path.
    return sft.load(config)
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
  read = lambda p: corpus.Corpus(p, d.text_field, binary=d.tokenizer == "byte", decode_errors=d.decode_errors)
  texts = read(path)
  tokenizer_file = tokenizer_path(d)
  spec = dict(path=path, fingerprint=corpus.fingerprint(texts.files), tokenizer=d.tokenizer,
              tokenizer_digest=tokenizer_file and tokenizers.digest(tokenizer_file), text_field=texts.text_field,
              val_fraction=d.val_fraction, format=TEXT_FORMAT)
  corpora = {None: texts}
  if d.val_path:  # A held-out path validates whole: its identity replaces the fraction's.
    corpora = {"train": texts, "validation": read(os.path.realpath(d.val_path))}
    spec.update(val_fraction=None, val_path=corpora["validation"].path,
                val_fingerprint=corpus.fingerprint(corpora["validation"].files))
  if d.decode_errors != "strict":
    spec["decode_errors"] = d.decode_errors  # Only where it changes the ids: earlier folders keep their names.
  folder = builders.folder_name("text", data_dir, spec)
  prepare.ensure(lambda: os.path.isdir(folder), lambda: prepare.text(
      folder, corpora, d.tokenizer, val_fraction=d.val_fraction, tokenizer_path=tokenizer_file), folder)
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
