"""Datasets as the trainer sees them: prepared once as TFDS datasets, read a batch at a time.

Text (files, JSON lines, Parquet, TFDS catalog texts) is tokenized by a streamed preparation into stored
token shards (pretrain/data/prepare.py, store.py); images and the Markov sequences are TFDS builders.
Either way the splits are read through array_record data sources, so memory and start-up time do not
depend on the size of the data, and each process reads only the rows of its own batches.
"""
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import builders, catalog, images, prepare, sources, store, tokenizers
from pretrain.data.batching import (Joined, Records, Rows, TokenStream, Windows, eval_batch, eval_batches,
                                    num_eval_batches, prefetched, train_batch)
from pretrain.errors import ConfigError, DataError

__all__ = ["Dataset", "load", "train_batch", "eval_batch", "eval_batches", "num_eval_batches", "prefetched",
           "TokenStream", "Records"]
TEXT_FORMAT = 2  # Part of a prepared text folder's name: 2 stores uint16/uint32 ids and end-of-text tokens.


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: TokenStream | Records
  val: TokenStream | Records
  vocab_size: int  # Token ids are in [0, vocab_size); includes BOS and end-of-text where there are.
  num_classes: int = 0  # Labels are in [0, num_classes) when the data is labeled.
  tokenizer: tokenizers.ByteTokenizer | tokenizers.CharTokenizer | tokenizers.FileTokenizer | None = None
  metadata: dict = dataclasses.field(default_factory=dict)

  @property
  def vocab(self) -> str | None:
    """The characters of a char-level dataset (id -> character), else None."""
    return getattr(self.tokenizer, "chars", None)

  def encode(self, text: str) -> np.ndarray:
    return (self.tokenizer or tokenizers.ByteTokenizer()).encode(text)

  def decode(self, ids) -> str:
    return (self.tokenizer or tokenizers.ByteTokenizer()).decode(ids)


def seq_len(dataset: Dataset, context: int) -> int:
  """Tokens the model reads per example: the context for streams, the record length otherwise."""
  if isinstance(dataset.train, TokenStream):
    return context
  if "tokens" not in dataset.train.spec:
    return 1  # An image is one item: throughput counts images.
  length = dataset.train.spec["tokens"][0][0] - 1
  if length > context:
    raise ConfigError(f"sequences have {length} tokens but model.context={context}; "
                      f"set --config.model.context={length} or more")
  return length


def vocabulary(dataset: Dataset) -> dict | None:
  """What the token ids mean (None for images), recorded in run.json so that a fine-tuning run can check
  that it reads its text the way its pretrained backbone did."""
  if isinstance(dataset.train, Records) and "tokens" not in dataset.train.spec:
    return None
  if dataset.tokenizer is not None:
    return {**dataset.tokenizer.describe(), "vocab_size": dataset.vocab_size}
  if dataset.name.startswith(("markov", "random")):
    return {"ids": dataset.name, "vocab_size": dataset.vocab_size}
  return {"ids": "bytes"}


def load(config) -> Dataset:
  """Prepares (once) and opens the dataset `config.data` names, both splits; with data.labels_per_class,
  the train split keeps only that many labeled examples of each class."""
  dataset = _load(config)
  if config.data.get("labels_per_class", 0):
    dataset = dataclasses.replace(dataset, train=labeled_subset(dataset, config.data.labels_per_class, config.seed))
  return dataset


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
      raise DataError(f"data.labels_per_class={per_class} but class {c} of {dataset.name} has only {len(members)} "
                      f"training examples; use at most {len(members)} or 0 to keep all")
    chosen.append(np.random.default_rng([seed, c, 2]).permutation(members)[:per_class])
  return train.subset(np.sort(np.concatenate(chosen)))


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


def _load(config) -> Dataset:
  d = config.data
  data_dir = builders.default_data_dir(d.data_dir)
  if d.name == "random":  # Uniform noise for speed benchmarks: nothing to prepare or learn.
    vocab = config.model.vocab_size or 256
    rng = np.random.default_rng(config.seed)
    splits = [TokenStream(rng.integers(0, vocab, d.random_tokens, dtype=np.int32)) for _ in range(2)]
    return Dataset("random", *splits, vocab_size=vocab)
  if d.name == "markov":
    m = d.markov.to_dict()
    builder = builders.prepare(builders.MarkovSequences, data_dir, **m)
    bos = m["vocab_size"]  # Prepended to every sequence so the model predicts all of its tokens.
    splits = [_records(builder, s).mapped(_with_bos(bos)) for s in (d.train_split, d.val_split)]
    return Dataset("markov", *splits, vocab_size=m["vocab_size"] + 1, num_classes=m["num_sources"],
                   metadata=dict(builder.info.metadata))
  if d.name == "text":
    if not d.path:
      raise DataError("data.name=text needs a file or directory: set --config.data.path=PATH")
    dataset = _text_files(d, data_dir)
    if d.get("text_segments", 0):
      whole = Joined(dataset.train.tokens, dataset.val.tokens)
      splits = segment_windows(whole, d.text_segments, config.model.context + 1, d.val_fraction)
      dataset = dataclasses.replace(dataset, train=splits[0], val=splits[1], num_classes=d.text_segments)
    return dataset
  if d.name in images.FORMATS:
    return _image_files(d, data_dir)
  builder = catalog.load_builder(d.name, data_dir)
  return _from_catalog(config, builder, data_dir)


# ------------------------------------------------------------------------------------------------ text


def _prepare_text(d, data_dir: str) -> str:
  """The folder of the prepared dataset `d` (data.name=text) names, preparing it first if needed."""
  if not os.path.exists(d.path):
    raise DataError(f"data path {d.path!r} does not exist; set --config.data.path to a text, .jsonl or .parquet "
                    "file or a folder of them")
  path = os.path.realpath(d.path)
  corpus = sources.Corpus(path, _text_field(d), binary=d.tokenizer == "byte")
  tokenizer_path = _tokenizer_path(d)
  spec = dict(path=path, fingerprint=sources.fingerprint(corpus.files), tokenizer=d.tokenizer,
              tokenizer_digest=tokenizer_path and tokenizers.digest(tokenizer_path), text_field=corpus.text_field,
              val_fraction=d.val_fraction, format=TEXT_FORMAT)
  folder = builders.folder_name("text", data_dir, spec)
  prepare.ensure(lambda: os.path.isdir(folder), lambda: prepare.text(
      folder, {None: corpus}, d.tokenizer, val_fraction=d.val_fraction, tokenizer_path=tokenizer_path), folder)
  return folder


def _text_files(d, data_dir) -> Dataset:
  folder = _prepare_text(d, data_dir)
  return _open_text(f"text:{d.path}", folder, ("train", "validation"), _tokenizer_path(d))


def _open_text(name, folder, splits, tokenizer_path) -> Dataset:
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
  tokenizer = tokenizers.make(meta["tokenizer"], chars=meta.get("vocab"), path=tokenizer_path,
                              end_of_text=meta.get("end_of_text") is not None)
  if tokenizer.end_of_text != meta.get("end_of_text") or tokenizer.vocab_size != meta["vocab_size"]:
    raise DataError(f"{folder} was prepared with another tokenizer; delete that folder to prepare it again")
  return Dataset(name, *streams, vocab_size=meta["vocab_size"], tokenizer=tokenizer, metadata=meta)


def _text_field(d) -> str:
  return d.get("text_field", "text")  # Configs saved before the field existed read "text".


def _tokenizer_path(d) -> str | None:
  """data.tokenizer_path for tokenizer="file" (its files' content is part of the dataset's identity)."""
  if d.tokenizer not in tokenizers.KINDS:
    raise ConfigError(f"unknown data.tokenizer={d.tokenizer!r}; use char, byte or file")
  if d.tokenizer != "file":
    if d.get("tokenizer_path"):
      raise ConfigError(f"data.tokenizer_path is set but data.tokenizer={d.tokenizer!r}; "
                        "set --config.data.tokenizer=file to use it")
    return None
  if not d.tokenizer_path:
    tokenizers.files(d.tokenizer_path)  # The error that says what to set.
  return os.path.realpath(d.tokenizer_path)


# ---------------------------------------------------------------------------------------------- records


def _with_bos(bos: int):
  def add(batch):
    tokens = batch["tokens"]
    return {**batch, "tokens": np.concatenate([np.full((len(tokens), 1), bos, tokens.dtype), tokens], axis=1)}
  return add


def _records(builder, split, keys=None) -> Records:
  if split not in builder.info.splits:
    raise DataError(f"{builder.name} has no split {split!r} (it has {', '.join(builder.info.splits)}); "
                    "set --config.data.train_split / val_split")
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:
    raise DataError(f"cannot read split {split!r} of {builder.name} in {builder.data_dir}: {e}; "
                    "delete that folder to prepare it again") from None
  if not len(source):
    raise DataError(f"split {split!r} of {builder.name} is empty")
  records = Records(Rows(source, keys, where=f"split {split!r} of {builder.name} in {builder.data_dir}"))
  return records.mapped(_int32_labels)


def _int32_labels(batch):
  return {**batch, "label": batch["label"].astype(np.int32)} if "label" in batch else batch


def _image_files(d, data_dir) -> Dataset:
  if not d.path or not os.path.exists(d.path):
    where = f"data path {d.path!r} does not exist" if d.path else f"data.name={d.name} needs a path"
    raise DataError(f"{where}; set --config.data.path to IDX files (MNIST format) or .npz arrays")
  path = os.path.realpath(d.path)
  builder = builders.prepare(images.ImageFiles, data_dir, path=path, format=d.name, splits=tuple(d.splits),
                             split_seed=d.split_seed, fingerprint=images.fingerprint(path, d.name))
  meta = dict(builder.info.metadata)
  return _image_dataset(f"{d.name}:{d.path}", d, builder, meta.get("num_classes", 0), meta)


def _image_dataset(name, d, builder, num_classes, meta) -> Dataset:
  """Image records of the train and val splits, label-filtered, with the config's preprocessing."""
  transform = images.make_transform(d.preprocess)
  splits = []
  for key in ("train_split", "val_split"):
    split = d[key]
    if split not in builder.info.splits:
      raise DataError(f"{builder.name} has no split {split!r} (it has {', '.join(builder.info.splits)}); "
                      f"set --config.data.{key}")
    records = _records(builder, split, keys=("image", "label"))
    if d.classes:
      records = _keep_classes(records, tuple(d.classes), f"split {split!r} of {builder.name}")
    splits.append(Records(records.source, transform, records.index))
  return Dataset(name, *splits, vocab_size=images.levels(d.preprocess),
                 num_classes=len(d.classes) or num_classes, metadata=meta)


def _keep_classes(records: Records, classes, where) -> Records:
  """Examples whose label is in `classes`, relabelled by position in it: (5, 6) -> 5 becomes 0, 6 becomes 1."""
  if "label" not in records.spec:
    raise DataError(f"data.classes={classes} needs labels; {where} has none (set --config.data.classes='()')")
  label = records.column("label")
  keep = np.isin(label, classes)
  if not keep.any():
    raise DataError(f"{where} has no examples with labels {classes}; check --config.data.classes")
  new_label = np.full(max(int(label.max()), max(classes)) + 1, -1, np.int32)
  new_label[list(classes)] = np.arange(len(classes))
  return records.subset(np.flatnonzero(keep)).mapped(lambda b: {**b, "label": new_label[b["label"]]})


# ---------------------------------------------------------------------------------------------- catalog


def _from_catalog(config, builder, data_dir) -> Dataset:
  d = config.data
  features = builder.info.features
  if "image" in features:
    num_classes = features["label"].num_classes if "label" in features else 0
    return _image_dataset(d.name, d, builder, num_classes, {})
  field = _text_field(d)
  if field not in features:
    raise DataError(f"TFDS dataset {d.name!r} has features {sorted(features)} and no {field!r}; set "
                    "--config.data.text_field to the one holding the text (or use an 'image' dataset)")
  tokenizer_path = _tokenizer_path(d)
  names = (d.train_split, d.val_split)
  rows = [_records(builder, s, keys=(field, "label")) for s in names]
  corpora = {s: sources.TFDSCorpus(r, f"TFDS {d.name} {s}", field, binary=d.tokenizer == "byte")
             for s, r in zip(names, rows)}
  if config.get("objective") == "classification" and "label" in features:
    return _labeled_texts(d, corpora, features["label"].num_classes, config.model.context, tokenizer_path)
  spec = dict(catalog=d.name, version=str(builder.info.version), data_dir=str(builder.data_dir), splits=names,
              text_field=field, tokenizer=d.tokenizer,
              tokenizer_digest=tokenizer_path and tokenizers.digest(tokenizer_path), format=TEXT_FORMAT)
  folder = builders.folder_name("text", data_dir, spec)
  prepare.ensure(lambda: os.path.isdir(folder),
                 lambda: prepare.text(folder, corpora, d.tokenizer, tokenizer_path=tokenizer_path), folder)
  return _open_text(d.name, folder, names, tokenizer_path)


def _labeled_texts(d, corpora: dict, num_classes, context, tokenizer_path) -> Dataset:
  """One row of length + 1 per text: its first `length` tokens (length: the longest text, at most the
  context), then padding that token_mask marks 0. The extra column keeps the layout of next-token rows,
  whose inputs are all columns but the last. Texts are tokenized when a batch reads them; one pass at load
  finds the character vocabulary and the longest text."""
  corpora = list(corpora.values())
  chars = None
  if d.tokenizer == "char":
    chars = tokenizers.char_vocabulary(text for c in corpora for text, _ in c.pieces())
  tok = tokenizers.make(d.tokenizer, chars=chars, path=tokenizer_path)

  def encode(text):
    return np.frombuffer(text, np.uint8) if tok.binary else tok.encode(text)
  length = min(context, max(len(encode(text)) for c in corpora for text, _ in c.pieces()))

  def pad(batch):
    tokens = np.zeros((len(batch["label"]), length + 1), np.int32)
    token_mask = np.zeros(tokens.shape, np.float32)
    for i, text in enumerate(batch[corpora[0].text_field]):
      ids = encode(corpora[0].text_of(text, d.name))[:length]
      tokens[i, :len(ids)], token_mask[i, :len(ids)] = ids, 1
    return {"tokens": tokens, "token_mask": token_mask, "label": batch["label"]}
  splits = [c.records.mapped(pad) for c in corpora]
  return Dataset(d.name, *splits, vocab_size=tok.vocab_size, num_classes=num_classes, tokenizer=tok)
