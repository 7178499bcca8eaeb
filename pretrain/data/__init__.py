"""Datasets as the trainer sees them: prepared with TFDS, read through array_record data sources."""
import dataclasses
import os

import numpy as np

from pretrain.data import builders, catalog, images, tokenizers
from pretrain.data.batching import Records, TokenStream, eval_batches, num_eval_batches, train_batch
from pretrain.errors import ConfigError, DataError

__all__ = ["Dataset", "load", "train_batch", "eval_batches", "num_eval_batches", "TokenStream", "Records"]


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: TokenStream | Records
  val: TokenStream | Records
  vocab_size: int  # Token ids are in [0, vocab_size); includes BOS where there is one.
  num_classes: int = 0  # Labels are in [0, num_classes) when the data is labeled.
  vocab: str | None = None  # Char vocabulary (id -> character) for decoding; None for bytes.
  tokenizer: tokenizers.FileTokenizer | None = None  # For data.tokenizer="file": encodes and decodes.
  metadata: dict = dataclasses.field(default_factory=dict)

  def encode(self, text: str) -> np.ndarray:
    if self.tokenizer is not None:
      return self.tokenizer.encode(text)
    if self.vocab is None:
      return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
    index = {c: i for i, c in enumerate(self.vocab)}
    missing = sorted(set(text) - set(index))
    if missing:
      raise DataError(f"characters {''.join(missing)!r} are not in the dataset's vocabulary")
    return np.array([index[c] for c in text], dtype=np.int32)

  def decode(self, ids) -> str:
    if self.tokenizer is not None:
      return self.tokenizer.decode(ids)
    if self.vocab is None:
      return bytes(int(i) for i in ids if i < 256).decode("utf-8", errors="replace")
    return "".join(self.vocab[int(i)] for i in ids if i < len(self.vocab))


def seq_len(dataset: Dataset, context: int) -> int:
  """Tokens the model reads per example: the context for streams, the record length otherwise."""
  if isinstance(dataset.train, TokenStream):
    return context
  if "tokens" not in dataset.train.fields:
    return 1  # An image is one item: throughput counts images.
  length = dataset.train.fields["tokens"].shape[1] - 1
  if length > context:
    raise ConfigError(f"sequences have {length} tokens but model.context={context}; "
                      f"set --config.model.context={length} or more")
  return length


def vocabulary(dataset: Dataset) -> dict | None:
  """What the token ids mean (None for images), recorded in run.json so that a fine-tuning run can check
  that it reads its text the way its pretrained backbone did."""
  if isinstance(dataset.train, Records) and "tokens" not in dataset.train.fields:
    return None
  if dataset.tokenizer is not None:
    return {"ids": "tokenizer file", "digest": tokenizers.digest(dataset.tokenizer.path)}
  if dataset.vocab is not None:
    return {"ids": "characters", "characters": dataset.vocab}
  if dataset.name.startswith(("markov", "random")):
    return {"ids": dataset.name, "vocab_size": dataset.vocab_size}
  return {"ids": "bytes"}


def load(config) -> Dataset:
  """Prepares (once) and loads the dataset `config.data` names, both splits, into host memory; with
  data.labels_per_class, the train split keeps only that many labeled examples of each class."""
  dataset = _load(config)
  if config.data.get("labels_per_class", 0):
    dataset = dataclasses.replace(dataset, train=labeled_subset(dataset, config.data.labels_per_class, config.seed))
  return dataset


def labeled_subset(dataset: Dataset, per_class: int, seed: int) -> Records:
  """A balanced subset of the train split, a pure function of (seed, per_class). Each class's examples are
  ranked by a (seed, class) permutation, so a larger budget keeps a smaller one's examples and adds more."""
  train = dataset.train
  if not isinstance(train, Records) or "label" not in train.fields:
    raise DataError(f"data.labels_per_class={per_class} needs labeled examples, but {dataset.name} has no label "
                    "feature; set --config.data.labels_per_class=0")
  labels = train.fields["label"]
  chosen = []
  for c in range(max(dataset.num_classes, int(labels.max()) + 1)):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise DataError(f"data.labels_per_class={per_class} but class {c} of {dataset.name} has only {len(members)} "
                      f"training examples; use at most {len(members)} or 0 to keep all")
    chosen.append(np.random.default_rng([seed, c, 2]).permutation(members)[:per_class])
  index = np.sort(np.concatenate(chosen))
  return dataclasses.replace(train, fields={k: v[index] for k, v in train.fields.items()})


def segment_windows(tokens, segments: int, length: int, val_fraction: float) -> list[Records]:
  """A text as a classification task: cut into `segments` equal contiguous parts, each cut into
  non-overlapping windows of `length` tokens labeled by their part; the last val_fraction of each part's
  windows validate. (Tiny shakespeare's parts are different plays: the label is which one.)"""
  bounds = np.linspace(0, len(tokens), segments + 1).astype(int)
  train, val = [], []
  for label, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
    n = (end - start) // length
    n_val = int(round(n * val_fraction))
    if n - n_val < 1 or n_val < 1:
      raise DataError(f"data.text_segments={segments}: a part of {end - start} tokens has {n} windows of {length}; "
                      "use fewer segments, a shorter model.context or more text")
    windows = tokens[start:start + n * length].reshape(n, length)
    train.append((windows[:n - n_val], label))
    val.append((windows[n - n_val:], label))
  as_records = lambda parts: Records({"tokens": np.concatenate([w for w, _ in parts]).astype(np.int32),
                                      "label": np.concatenate([np.full(len(w), y, np.int32) for w, y in parts])})
  return [as_records(train), as_records(val)]


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
    meta = dict(builder.info.metadata)
    bos = m["vocab_size"]  # Prepended to every sequence so the model predicts all of its tokens.
    splits = [_records(builder, s, bos=bos) for s in (d.train_split, d.val_split)]
    return Dataset("markov", *splits, vocab_size=m["vocab_size"] + 1, num_classes=m["num_sources"], metadata=meta)
  if d.name == "text":
    if not d.path:
      raise DataError("data.name=text needs a file or directory: set --config.data.path=PATH")
    if not os.path.exists(d.path):
      raise DataError(f"data path {d.path!r} does not exist; set --config.data.path to a text file or directory")
    file_tokenizer, tokenizer_files = _file_tokenizer(d)
    builder = builders.prepare(builders.TextFiles, data_dir, path=os.path.realpath(d.path), tokenizer=d.tokenizer,
                               val_fraction=d.val_fraction, fingerprint=builders.text_fingerprint(d.path),
                               **tokenizer_files)
    meta = dict(builder.info.metadata)
    splits = [_stream(builder, s) for s in (d.train_split, d.val_split)]
    num_classes = 0
    if d.get("text_segments", 0):
      whole = np.concatenate([splits[0].tokens, splits[1].tokens])
      splits, num_classes = segment_windows(whole, d.text_segments, config.model.context + 1, d.val_fraction), \
          d.text_segments
    return Dataset(f"text:{d.path}", *splits, vocab_size=meta["vocab_size"], vocab=meta.get("vocab"), metadata=meta,
                   tokenizer=file_tokenizer, num_classes=num_classes)
  if d.name in images.FORMATS:
    return _image_files(d, data_dir)
  builder = catalog.load_builder(d.name, data_dir)
  return _from_catalog(config, builder)


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
    records = _records(builder, split)
    fields = {k: v for k, v in records.fields.items() if k in ("image", "label")}
    if d.classes:
      fields = _keep_classes(fields, tuple(d.classes), f"split {split!r} of {builder.name}")
    splits.append(Records(fields, transform=transform))
  return Dataset(name, *splits, vocab_size=images.levels(d.preprocess),
                 num_classes=len(d.classes) or num_classes, metadata=meta)


def _keep_classes(fields, classes, where):
  """Examples whose label is in `classes`, relabelled by position in it: (5, 6) -> 5 becomes 0, 6 becomes 1."""
  if "label" not in fields:
    raise DataError(f"data.classes={classes} needs labels; {where} has none (set --config.data.classes='()')")
  label = fields["label"]
  keep = np.isin(label, classes)
  if not keep.any():
    raise DataError(f"{where} has no examples with labels {classes}; check --config.data.classes")
  new_label = np.full(max(int(label.max()), max(classes)) + 1, -1, np.int32)
  new_label[list(classes)] = np.arange(len(classes))
  out = {k: v[keep] for k, v in fields.items()}
  out["label"] = new_label[out["label"]]
  return out


def _file_tokenizer(d) -> tuple[tokenizers.FileTokenizer | None, dict]:
  """The tokenizer of data.tokenizer="file" and the builder arguments that make its files' content part of
  the dataset's identity; (None, {}) for char and byte, whose prepared folders stay where they were."""
  if d.tokenizer != "file":
    if d.get("tokenizer_path"):
      raise ConfigError(f"data.tokenizer_path is set but data.tokenizer={d.tokenizer!r}; "
                        "set --config.data.tokenizer=file to use it")
    return None, {}
  path = os.path.realpath(d.tokenizer_path) if d.tokenizer_path else None
  return tokenizers.FileTokenizer(path), {"tokenizer_path": path, "tokenizer_digest": tokenizers.digest(path)}


def _source(builder, split):
  try:
    return builder.as_data_source(split=split)
  except Exception as e:
    raise DataError(f"cannot read split {split!r} of {builder.name} in {builder.data_dir}: {e}; "
                    "delete that folder to prepare it again") from None


def _read_all(source, split, builder):
  try:
    return source.__getitems__(list(range(len(source))))
  except Exception as e:
    raise DataError(f"split {split!r} of {builder.name} in {builder.data_dir} is corrupt ({type(e).__name__}); "
                    "delete that folder to prepare it again") from None


def _stream(builder, split) -> TokenStream:
  source = _source(builder, split)
  chunks = _read_all(source, split, builder)
  return TokenStream(np.concatenate([c["tokens"] for c in chunks]).astype(np.int32))


def _records(builder, split, bos=None) -> Records:
  source = _source(builder, split)
  rows = _read_all(source, split, builder)
  if not rows:
    raise DataError(f"split {split!r} of {builder.name} is empty")
  fields = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  if bos is not None:
    tokens = fields["tokens"]
    fields["tokens"] = np.concatenate([np.full((len(tokens), 1), bos, tokens.dtype), tokens], axis=1)
  if "label" in fields:
    fields["label"] = fields["label"].astype(np.int32)
  return Records(fields)


def _from_catalog(config, builder) -> Dataset:
  d = config.data
  features = builder.info.features
  if "image" in features:
    num_classes = features["label"].num_classes if "label" in features else 0
    return _image_dataset(d.name, d, builder, num_classes, {})
  text_key = d.get("text_feature", "text")
  if text_key not in features:
    raise DataError(f"TFDS dataset {d.name!r} has features {sorted(features)} and no {text_key!r}; set "
                    "--config.data.text_feature to the one holding the text (or use an 'image' dataset)")
  as_bytes = lambda t: t if isinstance(t, bytes) else str(t).encode()
  rows = [_read_all(_source(builder, s), s, builder) for s in (d.train_split, d.val_split)]
  texts = [[as_bytes(r[text_key]) for r in split_rows] for split_rows in rows]
  for split, split_texts in zip((d.train_split, d.val_split), texts):
    if not split_texts:
      raise DataError(f"split {split!r} of TFDS dataset {d.name!r} is empty; set --config.data.train_split/val_split")
  file_tokenizer, _ = _file_tokenizer(d)
  vocab = None
  if file_tokenizer is not None:
    encode, vocab_size = lambda b: file_tokenizer.encode(b.decode("utf-8")), file_tokenizer.vocab_size
  elif d.tokenizer == "byte":
    encode, vocab_size = lambda b: np.frombuffer(b, np.uint8).astype(np.int32), 256
  else:
    vocab = "".join(sorted(set().union(*(set(t.decode()) for split in texts for t in split))))
    index = {c: i for i, c in enumerate(vocab)}
    encode, vocab_size = lambda b: np.array([index[c] for c in b.decode()], np.int32), len(vocab)
  common = dict(vocab_size=vocab_size, vocab=vocab, tokenizer=file_tokenizer)
  if config.get("objective") == "classification" and "label" in features:
    encoded = [[encode(t) for t in split] for split in texts]
    length = min(config.model.context, max(len(t) for split in encoded for t in split))
    splits = [labeled_texts(e, [r["label"] for r in split_rows], length) for e, split_rows in zip(encoded, rows)]
    return Dataset(d.name, *splits, num_classes=features["label"].num_classes, **common)
  streams = [TokenStream(encode(b"".join(split))) for split in texts]
  return Dataset(d.name, *streams, **common)


def labeled_texts(token_lists, labels, length: int) -> Records:
  """One row of length + 1 per text: its first `length` tokens, then padding that token_mask marks 0. The
  extra column keeps the layout of next-token rows, whose inputs are all columns but the last."""
  tokens = np.zeros((len(token_lists), length + 1), np.int32)
  token_mask = np.zeros(tokens.shape, np.float32)
  for i, t in enumerate(token_lists):
    t = t[:length]
    tokens[i, :len(t)] = t
    token_mask[i, :len(t)] = 1
  return Records({"tokens": tokens, "token_mask": token_mask, "label": np.asarray(labels, np.int32)})
