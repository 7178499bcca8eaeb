"""Text to token ids and back: bytes, characters, or a tokenizer read from local files.

`data.tokenizer`: "byte" (ids 0-255), "char" (the corpus's sorted unique characters, found by a streamed
first pass) or "file" (`data.tokenizer_path`: a Hugging Face tokenizer.json, or a directory that holds one
or GPT-2's vocab.json + merges.txt, so a pretrained model can be fine-tuned on new text with its own
vocabulary; nothing is downloaded).

A corpus of several documents ends each with an end-of-text id, as GPT-2 does: 256 for bytes, the id after
the last character for chars, the file's own <|endoftext|> where it has one (else the id after its
vocabulary). It decodes as "<|endoftext|>".

Every tokenizer encodes a list of pieces at once (`encode_pieces`: the file tokenizer's batch encoding runs
on its own threads) and describes itself as a plain dict (`describe`), which prepared datasets store and
run.json records so that a fine-tuning run can check that its ids mean what its backbone's meant.
"""
import abc
import hashlib
import json
import os

import numpy as np

from pretrain.errors import DataError

END_OF_TEXT = "<|endoftext|>"
KINDS = ("char", "byte", "file")

TOKENIZER_JSON = "tokenizer.json"
GPT2_FILES = ("vocab.json", "merges.txt")
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


SPECIAL_TOKEN_FILES = ("special_tokens_map.json", "tokenizer_config.json")  # Transformers' names for them.


def declared_tokens(tokenizer_file: str) -> dict[str, str]:
  """{"bos"|"eos"|"pad"|"cls"|"sep"|"mask"|"unk": token} as the Transformers files beside `tokenizer_file`
  declare them (special_tokens_map.json, tokenizer_config.json); {} when there are none."""
  folder, named = os.path.dirname(tokenizer_file), {}
  for name in SPECIAL_TOKEN_FILES:
    path = os.path.join(folder, name)
    try:
      entries = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {}
    except ValueError:
      raise DataError(f"{path} is not valid JSON; fix it or remove it (it only names special tokens)") from None
    for key, value in entries.items():
      if key.endswith("_token") and value:
        token = value.get("content") if isinstance(value, dict) else value
        if isinstance(token, str):
          named.setdefault(key[:-len("_token")], token)
  return named


def digest(path: str) -> str:
  """A hash of the tokenizer files' content, and of the files beside them naming its special tokens (they choose
  the end-of-text id): part of a tokenized dataset's identity."""
  h = hashlib.sha256()
  found = files(path)
  beside = [os.path.join(os.path.dirname(found[0]), f) for f in SPECIAL_TOKEN_FILES]
  for f in [*found, *(b for b in beside if os.path.isfile(b))]:
    h.update(os.path.basename(f).encode())
    h.update(open(f, "rb").read())
  return h.hexdigest()[:16]


class _Tokenizer(abc.ABC):
  """What every tokenizer offers; subclasses say how pieces become ids, ids become text, and how the
  vocabulary is recorded (run.json, the fine-tuning check)."""
  kind: str
  binary = False  # Reads raw bytes rather than text.
  end_of_text: int | None = None
  vocab_size: int

  @abc.abstractmethod
  def encode_pieces(self, pieces: list) -> list[np.ndarray]:
    """The ids of each piece (str, or bytes when `binary`)."""

  def encode(self, text: str) -> np.ndarray:
    """The int32 ids of one text (cut into pieces where pre-tokenizers split, so the ids are the whole's)."""
    pieces = [p.encode("utf-8") for p in _pieces(text)] if self.binary else _pieces(text)
    ids = self.encode_pieces(pieces)
    return np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)

  @abc.abstractmethod
  def decode(self, ids) -> str:
    """The text of `ids`."""

  @abc.abstractmethod
  def token_bytes(self) -> np.ndarray:
    """The UTF-8 bytes of text each id stands for ([vocab_size] int32; 0 for end of text and special tokens):
    what bits per byte divides by."""

  @abc.abstractmethod
  def describe(self) -> dict:
    """What the ids mean, as JSON: compared between pretraining and fine-tuning."""

  @property
  def dtype(self):
    """The narrowest unsigned type that holds every id: how prepared datasets store them."""
    return np.uint16 if self.vocab_size <= 1 << 16 else np.uint32


class ByteTokenizer(_Tokenizer):
  kind, binary = "byte", True

  def __init__(self, end_of_text: bool = False):
    self.end_of_text = 256 if end_of_text else None
    self.vocab_size = 257 if end_of_text else 256

  def encode_pieces(self, pieces):
    return [np.frombuffer(p, np.uint8) for p in pieces]

  def decode(self, ids) -> str:
    out, run = [], bytearray()
    for i in map(int, ids):
      if i < 256:
        run.append(i)
      elif i == self.end_of_text:
        out += [run.decode("utf-8", errors="replace"), END_OF_TEXT]
        run = bytearray()
    return "".join(out) + run.decode("utf-8", errors="replace")

  def token_bytes(self):
    return np.array([1] * 256 + [0] * (self.vocab_size - 256), np.int32)

  def describe(self):
    return {"ids": "bytes", "end_of_text": self.end_of_text}


class CharTokenizer(_Tokenizer):
  """Ids are positions in `chars`, the corpus's characters in code point order."""
  kind = "char"

  def __init__(self, chars: str, end_of_text: bool = False):
    self.chars = chars
    self._codes = np.frombuffer(chars.encode("utf-32-le"), np.uint32)
    self._table = np.full(1 << 16, -1, np.int32)  # Code point -> id, for the basic plane.
    basic = self._codes[self._codes < (1 << 16)]
    self._table[basic] = np.arange(len(basic))
    self.end_of_text = len(chars) if end_of_text else None
    self.vocab_size = len(chars) + bool(end_of_text)

  def encode_pieces(self, pieces):
    out = []
    for p in pieces:
      codes = np.frombuffer(p.encode("utf-32-le"), np.uint32)
      small = codes < len(self._table)
      ids = self._table[np.where(small, codes, 0)]
      if not small.all():  # Beyond the basic plane: look those up in the sorted codes.
        at = np.minimum(np.searchsorted(self._codes, codes[~small]), len(self._codes) - 1)
        ids[~small] = np.where(self._codes[at] == codes[~small], at, -1)
      unknown = ids < 0
      if unknown.any():
        missing = "".join(sorted({chr(c) for c in codes[unknown]}))
        raise DataError(f"characters {missing!r} are not in the dataset's vocabulary")
      out.append(ids.astype(np.uint32))
    return out

  def decode(self, ids) -> str:
    return "".join(self.chars[i] if i < len(self.chars) else END_OF_TEXT if i == self.end_of_text else ""
                   for i in map(int, ids))

  def token_bytes(self):
    return np.array([len(c.encode("utf-8", "surrogatepass")) for c in self.chars] + [0] * bool(self.end_of_text),
                    np.int32)

  def describe(self):
    return {"ids": "characters", "characters": self.chars, "end_of_text": self.end_of_text}


def char_vocabulary(pieces) -> str:
  """The sorted unique characters of a stream of text pieces, in memory bounded by one piece."""
  seen, extra = np.zeros(1 << 16, bool), set()
  for piece in pieces:
    codes = np.frombuffer(piece.encode("utf-32-le"), np.uint32)
    small = codes < (1 << 16)
    seen[codes[small]] = True
    if not small.all():
      extra.update(np.unique(codes[~small]).tolist())
  return "".join(map(chr, [*np.flatnonzero(seen).tolist(), *sorted(extra)]))


class FileTokenizer(_Tokenizer):
  """The vocabulary of the tokenizer files at `path`."""
  kind = "file"

  def __init__(self, path: str, end_of_text: bool = False):
    import tokenizers  # Imported here: only file tokenizers need it.
    self.path, self.files = path, files(path)
    try:
      if len(self.files) == 1:
        self._tok = tokenizers.Tokenizer.from_file(self.files[0])
      else:
        self._tok = _gpt2_tokenizer(tokenizers, *self.files)
    except Exception as e:  # The Rust side raises its own exception types.
      raise DataError(f"cannot read the tokenizer in {path}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    self._size = self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    # Documents end with <|endoftext|> (GPT-2, Qwen2), else the tokenizer's declared end of sequence (Llama's
    # </s> or <|end_of_text|>), else an id of our own past the file's.
    self.own_end_of_text = self._tok.token_to_id(END_OF_TEXT)  # The file's own id for it (None: it has none).
    if self.own_end_of_text is None:
      eos = declared_tokens(self.files[0]).get("eos")
      self.own_end_of_text = self._tok.token_to_id(eos) if eos else None
    if end_of_text:
      own = self.own_end_of_text
      self.end_of_text = own if own is not None else self._size
      self.vocab_size = max(self._size, self.end_of_text + 1)

  def token_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def encode_pieces(self, pieces):
    # encode_batch_fast skips the character offsets, which a large batch would hold for every token.
    encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
    return [np.asarray(e.ids, np.uint32) for e in encode(pieces, add_special_tokens=False)]

  def decode(self, ids) -> str:
    ids = [int(i) for i in ids]
    if self.end_of_text is None or self.end_of_text < self._size:
      return self._tok.decode(ids, skip_special_tokens=False)
    runs, run = [], []  # Our own end-of-text id, which the file does not know.
    for i in ids:
      if i == self.end_of_text:
        runs, run = [*runs, run], []
      else:
        run.append(i)
    return END_OF_TEXT.join(self._tok.decode(r, skip_special_tokens=False) for r in [*runs, run])

  def token_bytes(self):
    """Byte-level BPE (GPT-2, Llama 3, Qwen2): each character of a token's string is one byte. Otherwise
    (SentencePiece, WordPiece) the UTF-8 length of its text, '<0xNN>' byte tokens one byte, the word-start
    marker a space, '##' nothing. Special tokens and our own end of text cover none."""
    byte_level = type(self._tok.decoder).__name__ == "ByteLevel"
    special = {i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
    out = np.zeros(self.vocab_size, np.int32)
    for i in range(self._size):
      token = self._tok.id_to_token(i)
      if token is None or i in special:
        continue
      if byte_level:
        out[i] = len(token)
      elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        out[i] = 1
      else:
        out[i] = len(token.removeprefix("##").replace("\u2581", " ").encode("utf-8"))
    return out

  def describe(self):
    return {"ids": "tokenizer file", "digest": digest(self.path), "end_of_text": self.end_of_text}


def described(vocabulary: dict | None, config) -> _Tokenizer:
  """The tokenizer a run's dataset.json `vocabulary` describes (its ids, characters, end of text), without
  reading its data; a run without one (pretrain.hf import) reads config.data.tokenizer(_path)."""
  if vocabulary is None:
    if config.data.tokenizer != "file":
      raise DataError("the run has no dataset.json saying what its token ids mean, and data.tokenizer is not "
                      "file; evaluate a run of pretrain.main, or an import with its tokenizer")
    return FileTokenizer(config.data.tokenizer_path)
  eot = vocabulary.get("end_of_text") is not None
  kind = vocabulary.get("ids")
  if kind == "bytes":
    return ByteTokenizer(eot)
  if kind == "characters":
    return CharTokenizer(vocabulary["characters"], eot)
  return FileTokenizer(config.data.tokenizer_path, eot)


def make(kind: str, *, chars: str | None = None, path: str | None = None, end_of_text: bool = False) -> _Tokenizer:
  if kind == "byte":
    return ByteTokenizer(end_of_text)
  if kind == "char":
    return CharTokenizer(chars, end_of_text)
  if kind == "file":
    return FileTokenizer(path, end_of_text)
  raise DataError(f"unknown tokenizer {kind!r}; use --config.data.tokenizer=char, byte or file")


def _gpt2_tokenizer(tokenizers, vocab_json: str, merges_txt: str):
  """GPT-2's byte-level BPE, as transformers' GPT2TokenizerFast builds it from vocab.json + merges.txt."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab_json, merges_txt))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  if tok.token_to_id(END_OF_TEXT) is not None:
    tok.add_special_tokens([END_OF_TEXT])
  return tok


def _pieces(text: str) -> list[str]:
  """`text` cut into pieces of about _CHUNK_CHARS at pre-tokenizer split points (see safe_cut)."""
  pieces, start = [], 0
  while len(text) - start > 2 * _CHUNK_CHARS:
    cut = start + (safe_cut(text[start:start + 2 * _CHUNK_CHARS], _CHUNK_CHARS) or 2 * _CHUNK_CHARS)
    pieces.append(text[start:cut])
    start = cut
  return [p for p in [*pieces, text[start:]] if p]


def safe_cut(text: str, near: int = 0) -> int | None:
  """Where to end a piece of `text`: after the last lone newline past `near` (a non-space character on each
  side), else before the last lone space past `near`; None if there is neither. GPT-2-style pre-tokenizers
  split at both, so encoding the pieces gives the ids of encoding the whole."""
  for sep, after in (("\n", 1), (" ", 0)):
    cut = len(text) - 1
    while (cut := text.rfind(sep, max(near, 1), cut)) >= 1:
      if not text[cut - 1].isspace() and not text[cut + 1].isspace():
        return cut + after
  return None
