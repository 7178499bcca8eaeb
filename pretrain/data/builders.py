"""TFDS builders for the user's text files and for the embedded Markov dataset.

Both write array_record files and are read through `as_data_source()`, so TensorFlow is never needed.
Each prepared dataset lives in its own folder under the data dir, named by a hash of everything that
defines its content; preparing is guarded by a file lock so concurrent runs (sweeps, multi-process jobs)
prepare a dataset once.
"""
import contextlib
import fcntl
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import markov, tokenizers
from pretrain.errors import DataError

CHUNK_TOKENS = 1 << 16  # Tokens per array_record record of a text stream.


def default_data_dir(configured: str | None) -> str:
  return configured or os.environ.get("PRETRAIN_DATA_DIR") or os.path.expanduser("~/.cache/pretrain/datasets")


@contextlib.contextmanager
def _lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(builder_cls, data_dir: str, **kwargs) -> tfds.core.DatasetBuilder:
  """Builds (once) and returns a prepared builder; `kwargs` define the content and its folder name."""
  key = hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:12]
  folder = os.path.join(data_dir, f"{builder_cls.name}-{key}")
  with _lock(folder + ".lock"):
    builder = builder_cls(data_dir=folder, file_format="array_record", **kwargs)
    if not builder.is_prepared():
      tfds.disable_progress_bar()
      builder.download_and_prepare()
  return builder


class TextFiles(tfds.core.GeneratorBasedBuilder):
  """One text file or a directory of them, tokenized and split contiguously into train/validation.

  The token stream is stored in order as chunks of CHUNK_TOKENS; the char vocabulary (sorted unique
  characters of the whole text) is saved in the dataset's metadata so sampling can decode.
  """
  VERSION = tfds.core.Version("1.1.0")  # 1.1.0: split at int(n * 0.9), as nanoGPT
  disable_shuffling = True  # Records are consecutive chunks of one stream.

  def __init__(self, *, path: str, tokenizer: str, val_fraction: float, fingerprint: str,
               tokenizer_path: str | None = None, tokenizer_digest: str | None = None, **kwargs):
    # Only part of the folder name: a changed text or tokenizer file is a new dataset.
    del fingerprint, tokenizer_digest
    self._path, self._tokenizer, self._val_fraction = path, tokenizer, val_fraction
    self._tokenizer_path = tokenizer_path
    self._tokens = None
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Text from {self._path}, {self._tokenizer}-level tokens.",
        features=tfds.features.FeaturesDict({"tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32)}),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    text = read_text_files(self._path)
    if self._tokenizer == "char":
      try:
        chars = text.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{self._path} is not UTF-8 ({e.reason} at byte {e.start}); "
                        "use --config.data.tokenizer=byte for arbitrary bytes") from None
      vocab = "".join(sorted(set(chars)))
      index = {c: i for i, c in enumerate(vocab)}
      tokens = np.fromiter((index[c] for c in chars), dtype=np.int32, count=len(chars))
    elif self._tokenizer == "byte":
      vocab = None
      tokens = np.frombuffer(text, dtype=np.uint8).astype(np.int32)
    elif self._tokenizer == "file":
      vocab, file_tokenizer = None, tokenizers.FileTokenizer(self._tokenizer_path)
      try:
        tokens = file_tokenizer.encode(text.decode("utf-8"))
      except UnicodeDecodeError as e:
        raise DataError(f"{self._path} is not UTF-8 ({e.reason} at byte {e.start}); tokenizer files read text") from None
    else:
      raise DataError(f"unknown tokenizer {self._tokenizer!r}; use --config.data.tokenizer=char, byte or file")
    n_train = int(len(tokens) * (1 - self._val_fraction))  # nanoGPT: int(n * 0.9)
    if n_train < 2 or len(tokens) - n_train < 2:
      raise DataError(f"{self._path} has {len(tokens)} tokens: too few for a {1 - self._val_fraction:.0%}/"
                      f"{self._val_fraction:.0%} split; give more text or change --config.data.val_fraction")
    self.info.metadata.update(tokenizer=self._tokenizer, vocab=vocab,
                              vocab_size=(len(vocab) if vocab is not None else
                                          file_tokenizer.vocab_size if self._tokenizer == "file" else 256),
                              num_tokens={"train": n_train, "validation": len(tokens) - n_train})
    return {"train": self._generate_examples(tokens[:n_train]),
            "validation": self._generate_examples(tokens[n_train:])}

  def _generate_examples(self, tokens):
    for i, start in enumerate(range(0, len(tokens), CHUNK_TOKENS)):
      yield i, {"tokens": tokens[start:start + CHUNK_TOKENS]}


def text_files(path: str) -> list[str]:
  """The files that make up a text dataset: the file itself, or a directory's files in sorted order."""
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names if not f.startswith("."))
    if files:
      return files
    raise DataError(f"directory {path} has no files; point --config.data.path at a text file or a folder of them")
  raise DataError(f"data path {path!r} does not exist; set --config.data.path to a text file or directory")


def read_text_files(path: str) -> bytes:
  text = b"".join(open(f, "rb").read() for f in text_files(path))
  if not text:
    raise DataError(f"{path} is empty; point --config.data.path at a non-empty text file")
  return text


def text_fingerprint(path: str) -> str:
  """Identifies the content cheaply: path, size and modification time of every file."""
  stats = [(os.path.realpath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in text_files(path)]
  return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


class MarkovSequences(tfds.core.GeneratorBasedBuilder):
  """Sequences from K seeded sparse Markov sources; `label` is the source id (for fine-tuning).

  Metadata holds the exact bits/token of a sequence given its source, the most that not knowing the
  source can add, and the score of the best possible model on the validation split, so a run can report
  its distance from it.
  """
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "best_bits_per_token: the exact posterior predictive's score on the validation split."}

  def __init__(self, *, num_sources, vocab_size, branching, seq_len, num_train, num_val, seed, **kwargs):
    self._params = dict(num_sources=num_sources, vocab_size=vocab_size, branching=branching,
                        seq_len=seq_len, num_train=num_train, num_val=num_val, seed=seed)
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Sequences from seeded sparse Markov sources (embedded, no download).",
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(self._params["seq_len"],), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=self._params["num_sources"]),
        }),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    p = self._params
    sources = markov.make_sources(p["num_sources"], p["vocab_size"], p["branching"], p["seed"])
    train = markov.sample(sources, p["num_train"], p["seq_len"], p["seed"] + 1)
    val = markov.sample(sources, p["num_val"], p["seq_len"], p["seed"] + 2)
    self.info.metadata.update(
        entropy_bits_per_token=markov.sequence_entropy_bits_per_token(sources, p["seq_len"]),
        source_id_bound_bits_per_token=markov.source_id_bound_bits_per_token(p["num_sources"], p["seq_len"]),
        best_bits_per_token=markov.best_bits_per_token(sources, val[0]),
        entropy_rate_bits=markov.entropy_rates_bits(sources).tolist(),
        **p)
    return {"train": self._generate_examples(*train), "validation": self._generate_examples(*val)}

  def _generate_examples(self, tokens, labels):
    for i in range(len(tokens)):
      yield i, {"tokens": tokens[i], "label": labels[i]}
