"""Labeled texts for objective=classification, one example per record: your files (data.name=text with
data.label_field) and TFDS catalog texts with a label feature (catalog.py).

Records come from JSON lines, CSV/TSV or Parquet (the text in data.text_field, the label in data.label_field),
or from a folder whose subfolders are the classes (data.label_field=subfolder: each file one text, labeled
by the name of its subfolder); see corpus.py. They are tokenized once into a TFDS dataset of (tokens, label)
records in array_record shards, plus each split's labels as a small .npy file (choosing labels_per_class
subsets reads those, not the texts); batches read only their own records.

Labels (strings or integers) become ids in sorted order (numerically when every label is an integer), saved
as the dataset's label_names. data.val_path's records validate whole; without it a seeded (data.split_seed),
stratified data.val_fraction of each class's records does. An example's row is its first
min(model.context, longest text) tokens, padded; token_mask marks the real ones, so the classifier's pooling
reads only those. The same files with objective=next_token are a corpus of documents (text.py).
"""
import array
import os

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import Dataset, Records, builders, corpus, prepare, store, tokenizers
from pretrain.errors import DataError

FORMAT = 1  # Part of a prepared folder's name: bump when the layout changes.
_BATCH = 256  # Texts per tokenizer call.


def load(config, name: str, tokenizer_file: str | None) -> Dataset:
  """Your files' records (data.path, data.val_path)."""
  d = config.data
  binary = d.tokenizer == "byte"
  corpora = {"train": corpus.Corpus(os.path.realpath(d.path), d.text_field, binary, d.decode_errors)}
  if d.val_path:
    corpora["validation"] = corpus.Corpus(os.path.realpath(d.val_path), d.text_field, binary, d.decode_errors)
  spec = dict({s: (c.path, corpus.fingerprint(c.files)) for s, c in corpora.items()}, label_field=d.label_field,
              decode_errors=d.decode_errors, val=None if d.val_path else (d.val_fraction, d.split_seed))
  return prepared(name, spec, corpora, d.label_field, config, tokenizer_file)


def prepared(name: str, spec: dict, corpora: dict, label_field: str, config, tokenizer_file, names=None) -> Dataset:
  """The dataset of `corpora`'s labeled records ({"train": ...} or also {"validation": ...}), prepared once into a
  folder named by `spec` (what defines the records) and the tokenizer. `names`: the labels' names when the records'
  labels are already ids (a TFDS ClassLabel's); otherwise the labels found are sorted into ids."""
  d = config.data
  spec = dict(spec, text_field=d.text_field, tokenizer=d.tokenizer, format=FORMAT,
              tokenizer_digest=tokenizer_file and tokenizers.digest(tokenizer_file))
  folder = builders.folder_name("labeled", builders.default_data_dir(d.data_dir), spec)
  prepare.ensure(lambda: os.path.isdir(folder), lambda: prepare.atomically(folder, lambda tmp: _prepare(
      tmp, corpora, label_field, d, tokenizer_file, names)), folder)
  return _open(name, folder, config.model.context, tokenizer_file)


def label_order(names) -> list[str]:
  """Sorted label names: numerically when all are integers (so "10" follows "9"), else as strings."""
  names = list(names)
  if all(n.lstrip("-").isdigit() for n in names):
    return sorted(names, key=int)
  return sorted(names)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
  """Whether each record validates: a seeded round(val_fraction * n) of each class's n records, at least one
  record of each class left to train."""
  val = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    n_val = min(int(round(val_fraction * len(members))), len(members) - 1)
    val[np.random.default_rng([seed, int(c), 3]).permutation(members)[:n_val]] = True
  return val


def _scan(corpora: dict, label_field: str, d, chars: set | None):
  """Pass 1: each record's label (codes in first-seen order, per split) and the names; the characters too."""
  codes, names = {}, {}
  for split, texts in corpora.items():
    codes[split] = array.array("i")  # 4 bytes a record, as the labels kept beside the prepared records.
    for text, label, where in texts.records(label_field):
      if not text or not text.strip():
        raise DataError(f"{where} has an empty text in {d.text_field!r}; fill or remove that record")
      codes[split].append(names.setdefault(str(label), len(names)))
      if chars is not None:
        chars.update(text)  # Sorted by code point below, as tokenizers.char_vocabulary sorts a stream's.
    if not codes[split]:
      raise DataError(f"{texts.path} holds no records; point --config.data.{'path' if split == 'train' else 'val_path'} "
                      "at labeled text")
  return codes, names


def _prepare(tmp: str, corpora: dict, label_field: str, d, tokenizer_file, names=None) -> None:
  chars = set() if d.tokenizer == "char" else None
  codes, first_seen = _scan(corpora, label_field, d, chars)
  if names is None:
    names = label_order(first_seen)
    if len(names) < 2:
      raise DataError(f"the labels in {label_field!r} of {d.path} have one class ({names[0]!r}); a classifier needs "
                      "two or more: check --config.data.label_field and the files")
    to_id = np.array([names.index(n) for n in first_seen], np.int32)
  else:  # The labels are ids already.
    to_id = np.array([int(n) for n in first_seen], np.int32)
  labels = {split: to_id[np.asarray(c, np.int64)] for split, c in codes.items()}
  if "validation" in corpora:
    sources = {"train": ("train", None), "validation": ("validation", None)}
  else:
    val = stratified_split(labels["train"], d.val_fraction, d.split_seed)
    if not val.any():
      raise DataError(f"data.val_fraction={d.val_fraction} of {len(val)} records leaves none to validate; raise it "
                      "or give --config.data.val_path")
    labels = {"train": labels["train"][~val], "validation": labels["train"][val]}
    sources = {"train": ("train", ~val), "validation": ("train", val)}
  tok = tokenizers.make(d.tokenizer, chars="".join(sorted(chars)) if chars is not None else None,
                        path=tokenizer_file, end_of_text=True)  # The ids of the same files read as documents.
  features = tfds.features.FeaturesDict({
      "tokens": tfds.features.Tensor(shape=(None,), dtype=tok.dtype, encoding=tfds.features.Encoding.BYTES),
      "label": tfds.features.Scalar(dtype=np.int32)})
  infos, longest = [], 0
  for split, (read, keep) in sources.items():
    writer = store.RecordWriter(os.path.join(tmp, f"records-{split}"), features)
    for ids, label in _encoded(corpora[read], label_field, tok, to_id[np.asarray(codes[read], np.int64)], keep):
      writer.write({"tokens": ids.astype(tok.dtype), "label": label})
      longest = max(longest, len(ids))
    infos.append(writer.finish(tmp, split))
    np.save(os.path.join(tmp, f"labels-{split}.npy"), labels[split])
  metadata = dict(tokenizer=tok.kind, vocab=tok.describe().get("characters"), vocab_size=tok.vocab_size,
                  end_of_text=tok.end_of_text, label_names=list(names), longest=longest,
                  records={s: int(len(v)) for s, v in labels.items()})
  store.write_metadata(tmp, features, infos, metadata,
                       f"labeled texts of {' + '.join(c.path for c in corpora.values())}, {tok.kind} tokens")


def _encoded(texts, label_field, tok, label_ids, keep):
  """Pass 2: (ids, label id) of the kept records, tokenized _BATCH texts at a time."""
  batch = []
  for i, (text, _, _) in enumerate(texts.records(label_field)):
    if keep is None or keep[i]:
      batch.append((text, int(label_ids[i])))
    if len(batch) == _BATCH:
      yield from zip(tok.encode_pieces([t for t, _ in batch]), (y for _, y in batch))
      batch = []
  if batch:
    yield from zip(tok.encode_pieces([t for t, _ in batch]), (y for _, y in batch))


class LabeledRows:
  """Records of a prepared labeled split as padded rows: tokens [n, length + 1] (the extra column keeps the
  layout of next-token rows, whose inputs are all columns but the last), token_mask, label."""

  def __init__(self, source, labels: np.ndarray, length: int, where: str):
    self.source, self.labels, self.length, self.where = source, labels, length, where

  def __len__(self):
    return len(self.labels)

  def column(self, name: str):
    return self.labels if name == "label" else None

  def read(self, index) -> dict:
    index = [int(i) for i in index]
    try:
      rows = self.source.__getitems__(index) if index else []
    except Exception as e:  # array_record raises its own types for damaged files.
      raise DataError(f"{self.where} is damaged ({type(e).__name__}); delete that folder to prepare it again") from None
    tokens = np.zeros((len(index), self.length + 1), np.int32)
    token_mask = np.zeros(tokens.shape, np.float32)
    for i, row in enumerate(rows):
      ids = row["tokens"][:self.length]
      tokens[i, :len(ids)], token_mask[i, :len(ids)] = ids, 1
    return {"tokens": tokens, "token_mask": token_mask, "label": self.labels[index]}


def _open(name: str, folder: str, context: int, tokenizer_file) -> Dataset:
  try:
    builder = tfds.builder_from_directory(folder)
    meta = dict(builder.info.metadata)
    sources = {s: builder.as_data_source(split=s) for s in ("train", "validation")}
    labels = {s: np.load(os.path.join(folder, f"labels-{s}.npy")) for s in sources}
  except Exception as e:
    raise DataError(f"cannot read the prepared dataset {folder} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                    "delete that folder to prepare it again") from None
  length = min(context, meta["longest"])
  splits = [Records(LabeledRows(sources[s], labels[s], length, f"split {s!r} of {folder}")) for s in sources]
  tok = tokenizers.make(meta["tokenizer"], chars=meta.get("vocab"), path=tokenizer_file, end_of_text=True)
  if tok.vocab_size != meta["vocab_size"]:
    raise DataError(f"{folder} was prepared with another tokenizer; delete that folder to prepare it again")
  return Dataset(name, *splits, vocab_size=meta["vocab_size"], num_classes=len(meta["label_names"]), tokenizer=tok,
                 metadata=meta, label_names=tuple(meta["label_names"]))
