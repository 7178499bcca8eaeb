"""Tokenizers read from local files: a Hugging Face `tokenizers` JSON, or GPT-2's vocab.json + merges.txt.

`data.tokenizer="file"` with `data.tokenizer_path` pointing at a tokenizer.json, or at a directory that holds
one (or holds vocab.json and merges.txt, as a published GPT-2 does), lets a pretrained model be fine-tuned
on new text with its own vocabulary. Nothing is downloaded.
"""
import hashlib
import os

import numpy as np

from pretrain.errors import DataError

TOKENIZER_JSON = "tokenizer.json"
GPT2_FILES = ("vocab.json", "merges.txt")
GPT2_END_OF_TEXT = "<|endoftext|>"
_CHUNK_CHARS = 1 << 20  # Text is encoded in pieces of about this many characters, cut at line starts.


def files(path: str) -> list[str]:
  """The files that define the tokenizer at `path` (a tokenizer.json, or a directory holding its files)."""
  if not path:
    raise DataError("data.tokenizer=file needs --config.data.tokenizer_path=PATH (a tokenizer.json, or a directory "
                    "with tokenizer.json or vocab.json + merges.txt)")
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, TOKENIZER_JSON)):
      return [os.path.join(path, TOKENIZER_JSON)]
    if all(os.path.isfile(os.path.join(path, f)) for f in GPT2_FILES):
      return [os.path.join(path, f) for f in GPT2_FILES]
    raise DataError(f"{path} has neither {TOKENIZER_JSON} nor {' + '.join(GPT2_FILES)}; point "
                    "--config.data.tokenizer_path at a tokenizer.json or a directory holding them")
  raise DataError(f"tokenizer path {path!r} does not exist; set --config.data.tokenizer_path to a tokenizer.json "
                  "or a directory with vocab.json + merges.txt")


def digest(path: str) -> str:
  """A hash of the tokenizer files' content: part of a tokenized dataset's identity."""
  h = hashlib.sha256()
  for f in files(path):
    h.update(os.path.basename(f).encode())
    h.update(open(f, "rb").read())
  return h.hexdigest()[:16]


class FileTokenizer:
  """encode(text) -> int32 ids and decode(ids) -> text, with the vocabulary of the files at `path`."""

  def __init__(self, path: str):
    import tokenizers  # Imported here: only file tokenizers need it.
    self.path, self.files = path, files(path)
    try:
      if len(self.files) == 1:
        self._tok = tokenizers.Tokenizer.from_file(self.files[0])
      else:
        self._tok = _gpt2_tokenizer(tokenizers, *self.files)
    except Exception as e:  # The Rust side raises its own exception types.
      raise DataError(f"cannot read the tokenizer in {path}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

  def token_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def encode(self, text: str) -> np.ndarray:
    pieces = _pieces(text)
    ids = [np.asarray(e.ids, np.int32) for e in self._tok.encode_batch(pieces, add_special_tokens=False)]
    return np.concatenate(ids) if ids else np.zeros(0, np.int32)

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def _gpt2_tokenizer(tokenizers, vocab_json: str, merges_txt: str):
  """GPT-2's byte-level BPE, as transformers' GPT2TokenizerFast builds it from vocab.json + merges.txt."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab_json, merges_txt))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  if tok.token_to_id(GPT2_END_OF_TEXT) is not None:
    tok.add_special_tokens([GPT2_END_OF_TEXT])
  return tok


def _pieces(text: str) -> list[str]:
  """Cuts long text before a line that starts with a non-space character, where GPT-2-style pre-tokenizers
  split anyway, so encoding the pieces gives the ids of encoding the whole."""
  pieces, start = [], 0
  while len(text) - start > _CHUNK_CHARS:
    cut = start + _CHUNK_CHARS
    while cut < len(text) and not (text[cut - 1] == "\n" and not text[cut].isspace()):
      cut = text.find("\n", cut) + 1 or len(text)
    pieces.append(text[start:cut])
    start = cut
  pieces.append(text[start:])
  return [p for p in pieces if p]
