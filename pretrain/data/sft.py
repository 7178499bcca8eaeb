"""Supervised fine-tuning data (data.name=text with data.prompt_field and data.completion_field, or
data.messages_field): JSON-lines records, each tokenized as its prompt, its completion and an end-of-text, packed
one after another into a token stream whose `targets` mark the completion tokens and the end-of-text. Chat
records (a list of {"role", "content"}) are rendered with the tokenizer's chat template (tokenizer_config.json's
chat_template, as Transformers' apply_chat_template renders it); each assistant turn is a completion, the text
before it (the template's generation prompt included) its prompt. Training and evaluation read
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
  if not (d.prompt_field and d.completion_field) and not d.messages_field:
    raise ConfigError("supervised fine-tuning needs both data.prompt_field and data.completion_field, or "
                      f"data.messages_field (got {d.prompt_field!r} and {d.completion_field!r})")
  if d.tokenizer == "char":
    raise ConfigError("data.prompt_field needs data.tokenizer=byte or file: a char vocabulary built from these "
                      "records would not mean what the base model's ids mean")
  tokenizer_file = tokenizer_path(d)
  tokenizer = tokenizers.make(d.tokenizer, path=tokenizer_file, end_of_text=True)
  template = ChatTemplate.of(tokenizer_file) if d.messages_field else None
  train = _records(d.path, d, template)
  if d.val_path:
    val = _records(d.val_path, d, template)
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


def _records(path: str, d, template=None) -> list[list[tuple[str, bool]]]:
  """Every record under `path` as its pieces of text, each a target or not; a bad line is one error naming its file
  and line."""
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
          if template is not None:
            messages = record.get(d.messages_field)
            if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                         and m.get("role") for m in messages):
              raise DataError(f"{file}:{number} has no list of {{role, content}} messages under {d.messages_field!r}; "
                              f"set data.messages_field to its key ({', '.join(sorted(record)) or 'none'})")
            out.append(template.pieces(messages, f"{file}:{number}"))
            continue
          missing = [k for k in (d.prompt_field, d.completion_field) if not isinstance(record.get(k), str)]
          if missing:
            raise DataError(f"{file}:{number} has no text field {missing[0]!r}; set data.prompt_field / "
                            f"data.completion_field to its keys ({', '.join(sorted(record)) or 'none'})")
          out.append([(record[d.prompt_field], False), (record[d.completion_field], True)])
    except UnicodeDecodeError as e:
      raise DataError(f"{file} is not UTF-8 (byte {e.start}); convert it to UTF-8") from None
  if not out:
    raise DataError(f"{path} holds no prompt/completion records")
  return out


def _stream(records, tokenizer) -> TokenStream:
  end = tokenizer.end_of_text
  ids, targets = [], []
  for pieces in records:
    for text, is_target in pieces:
      piece = tokenizer.encode(text)
      ids.append(piece)
      targets.append(np.full(len(piece), float(is_target), np.float32))
    ids.append([end])  # The model learns to stop.
    targets.append(np.ones(1, np.float32))
  return TokenStream(np.concatenate(ids).astype(np.int32), document_end=end, targets=np.concatenate(targets))


class ChatTemplate:
  """tokenizer_config.json's chat_template, rendered as Transformers' apply_chat_template renders it (a sandboxed
  Jinja2 environment with trim_blocks and lstrip_blocks, the special tokens by name, raise_exception)."""

  def __init__(self, source: str, special: dict[str, str]):
    import jinja2.sandbox
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=["jinja2.ext.loopcontrols"])
    def raise_exception(message):
      raise jinja2.exceptions.TemplateError(message)
    env.globals["raise_exception"] = raise_exception
    self.template, self.special = env.from_string(source), {f"{k}_token": v for k, v in special.items()}

  @classmethod
  def of(cls, tokenizer_file: str | None) -> "ChatTemplate":
    if not tokenizer_file:
      raise ConfigError("data.messages_field renders chats with a tokenizer's chat template: set "
                        "--config.data.tokenizer=file and --config.data.tokenizer_path to a folder whose "
                        "tokenizer_config.json has one")
    first_file = tokenizers.files(tokenizer_file)[0]
    folder = os.path.dirname(first_file)
    path = os.path.join(folder, "tokenizer_config.json")
    try:
      source = json.load(open(path, encoding="utf-8")).get("chat_template") if os.path.isfile(path) else None
    except ValueError:
      raise DataError(f"{path} is not valid JSON; fix it") from None
    if isinstance(source, list):  # Named templates: the default one.
      source = next((t.get("template") for t in source if t.get("name") == "default"), None)
    if not isinstance(source, str):
      raise DataError(f"{folder} has no chat_template in tokenizer_config.json; data.messages_field needs one")
    return cls(source, tokenizers.declared_tokens(first_file))

  def render(self, messages, add_generation_prompt: bool = False) -> str:
    return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)

  def pieces(self, messages, where: str) -> list[tuple[str, bool]]:
    """The rendered chat cut at each assistant turn: the text before it (up to and with the generation prompt)
    is context, the turn itself a target."""
    out, done = [], ""
    for i, message in enumerate(messages):
      if message["role"] != "assistant":
        continue
      before = self.render(messages[:i], add_generation_prompt=True)
      through = self.render(messages[:i + 1])
      if not (before.startswith(done) and through.startswith(before)):
        raise DataError(f"{where}: the chat template does not render each turn as an extension of the turns before "
                        "it, so the assistant's tokens cannot be told apart; use prompt/completion fields")
      out += [(before[len(done):], False), (through[len(before):], True)]
      done = through
    whole = self.render(messages)
    if not out:
      raise DataError(f"{where}: the chat has no assistant message to learn from")
    if len(whole) > len(done):
      out.append((whole[len(done):], False))
    return out
