"""Supervised fine-tuning data (data.name=text with data.prompt_field and data.completion_field): JSON-lines
records, each tokenized as its prompt, its completion and an end-of-text, packed one after another into a
token stream whose `targets` mark the completion tokens and the end-of-text. Training and evaluation read
windows of it as of any text; the loss and the eval count cover the targets only, and each record is a
document (its own attention and positions, as data.document_mask gives any text).

Fine-tuning sets are read whole into memory (two int32/float32 arrays of their tokens): a million records of a
hundred tokens take under a gigabyte.
"""
import glob
import json
import os

import numpy as np

from pretrain.data import Dataset, TokenStream, tokenizers
from pretrain.data.text import tokenizer_path
from pretrain.errors import ConfigError, DataError


def load(config) -> Dataset:
  d = config.data
  if not (d.prompt_field and d.completion_field):
    raise ConfigError("supervised fine-tuning needs both data.prompt_field and data.completion_field "
                      f"(got {d.prompt_field!r} and {d.completion_field!r})")
  if d.tokenizer == "char":
    raise ConfigError("data.prompt_field needs data.tokenizer=byte or file: a char vocabulary built from these "
                      "records would not mean what the base model's ids mean")
  tokenizer = tokenizers.make(d.tokenizer, path=tokenizer_path(d), end_of_text=True)
  train = _records(d.path, d)
  if d.val_path:
    val = _records(d.val_path, d)
  else:
    n_val = int(round(len(train) * d.val_fraction))
    if n_val < 1 or n_val >= len(train):
      raise DataError(f"data.val_fraction={d.val_fraction} of {len(train)} records leaves no train or no validation "
                      "records; set --config.data.val_path=FILE or another fraction")
    train, val = train[:-n_val], train[-n_val:]
  return Dataset(f"sft:{d.path}", _stream(train, tokenizer), _stream(val, tokenizer), vocab_size=tokenizer.vocab_size,
                 tokenizer=tokenizer, metadata={"records": {"train": len(train), "validation": len(val)}})


def _files(path: str) -> list[str]:
  if os.path.isdir(path):
    files = sorted(glob.glob(os.path.join(path, "**", "*.jsonl"), recursive=True))
    if not files:
      raise DataError(f"{path} holds no .jsonl files; supervised fine-tuning reads JSON lines")
    return files
  if not path.endswith(".jsonl"):
    raise DataError(f"{path}: supervised fine-tuning reads JSON lines (.jsonl), one prompt/completion record each")
  return [path]


def _records(path: str, d) -> list[tuple[str, str]]:
  """(prompt, completion) of every record under `path`; a bad line is one error naming its file and line."""
  out = []
  for file in _files(path):
    try:
      with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
          if not line.strip():
            continue
          try:
            record = json.loads(line)
          except ValueError as e:
            raise DataError(f"{file}:{number} is not a JSON object ({e}); fix or remove that line") from None
          missing = [k for k in (d.prompt_field, d.completion_field) if not isinstance(record.get(k), str)]
          if missing:
            raise DataError(f"{file}:{number} has no text field {missing[0]!r}; set data.prompt_field / "
                            f"data.completion_field to its keys ({', '.join(sorted(record)) or 'none'})")
          out.append((record[d.prompt_field], record[d.completion_field]))
    except UnicodeDecodeError as e:
      raise DataError(f"{file} is not UTF-8 (byte {e.start}); convert it to UTF-8") from None
  if not out:
    raise DataError(f"{path} holds no prompt/completion records")
  return out


def _stream(records, tokenizer) -> TokenStream:
  end = tokenizer.end_of_text
  ids, targets = [], []
  for prompt, completion in records:
    p, c = tokenizer.encode(prompt), tokenizer.encode(completion)
    ids += [p, c, [end]]
    targets += [np.zeros(len(p), np.float32), np.ones(len(c) + 1, np.float32)]
  return TokenStream(np.concatenate(ids).astype(np.int32), document_end=end, targets=np.concatenate(targets))
