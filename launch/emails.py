"""Raw e-mails (one RFC 822 file each, in class folders) -> train.jsonl / val.jsonl of {"text", "label"} records.

  python -m launch.emails --src ../shared/data/spamassassin --out data/emails [--val_fraction 0.2] [--seed 0]

A record's text is the Subject line and the body as UTF-8: the text/plain parts, or the text/html parts with
their tags stripped when there is no plain part; attachments and the other headers are left out (headers such
as a spam filter's own verdict would give the label away). Parts are decoded with their declared charset, bytes
that do not decode become U+FFFD. The label of a file is "spam" when its folder's name starts with "spam", else
"ham" (the SpamAssassin corpus's layout). A seeded val_fraction of each class's records validates: stratified,
so both files keep the corpus's class balance, and nothing of a validation e-mail is in train.jsonl.
"""
import email
import email.header
import email.policy
import html
import json
import os
import random
import re

from absl import flags

from pretrain import cli

flags.DEFINE_string("src", None, "Folder of class folders of raw e-mails.")
flags.DEFINE_string("out", None, "Where train.jsonl and val.jsonl go.")
flags.DEFINE_float("val_fraction", 0.2, "Fraction of each class's e-mails that validates.")
flags.DEFINE_integer("seed", 0, "Seed of the split.")
FLAGS = flags.FLAGS


def _text(payload: bytes, charset: str | None) -> str:
  try:
    return payload.decode(charset or "utf-8", "replace")
  except LookupError:  # A charset Python does not know.
    return payload.decode("utf-8", "replace")


def _subject(message) -> str:
  raw = message.get("Subject")
  if raw is None:
    return ""
  parts = []
  try:
    pieces = email.header.decode_header(str(raw))
  except Exception:  # A malformed encoded word: the header as it stands.
    pieces = [(str(raw), None)]
  for piece, charset in pieces:
    # Undeclared 8-bit header bytes arrive as surrogates in a str: back to bytes, read as UTF-8.
    parts.append(_text(piece.encode("utf-8", "surrogateescape"), "utf-8") if isinstance(piece, str)
                 else _text(piece, charset))
  return " ".join("".join(parts).split())


def _body(message) -> str:
  plain, markup = [], []
  for part in message.walk():
    kind = part.get_content_type()
    if part.is_multipart() or part.get_filename() or kind not in ("text/plain", "text/html"):
      continue
    payload = part.get_payload(decode=True)
    if payload:
      (plain if kind == "text/plain" else markup).append(_text(payload, part.get_content_charset()))
  if plain:
    return "\n".join(plain)
  text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", "\n".join(markup))
  return html.unescape(re.sub(r"(?s)<[^>]*>", " ", text))


def text_of(raw: bytes) -> str:
  """Subject and body of one raw e-mail, with \\n line ends; "" when both are empty."""
  message = email.message_from_bytes(raw, policy=email.policy.compat32)
  subject, body = _subject(message), _body(message).strip()
  if not (subject or body):
    return ""
  text = f"Subject: {subject}\n\n{body}".replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
  return text.encode("utf-8", "replace").decode("utf-8")  # Lone surrogates (undecodable leftovers) -> "?".


def split(src: str, val_fraction: float, seed: int) -> dict[str, list[dict]]:
  """{"train": records, "val": records}, each ordered by label, then by file."""
  by_label = {}
  for folder in sorted(os.listdir(src)):
    if not os.path.isdir(os.path.join(src, folder)):
      continue
    label = "spam" if folder.startswith("spam") else "ham"
    for name in sorted(os.listdir(os.path.join(src, folder))):
      with open(os.path.join(src, folder, name), "rb") as f:
        text = text_of(f.read())
      if text:
        by_label.setdefault(label, []).append({"text": text, "label": label})
  out = {"train": [], "val": []}
  for label in sorted(by_label):
    records = by_label[label]
    chosen = set(random.Random(f"{seed}-{label}").sample(range(len(records)), round(val_fraction * len(records))))
    for i, record in enumerate(records):
      out["val" if i in chosen else "train"].append(record)
  return out


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  for name, records in split(FLAGS.src, FLAGS.val_fraction, FLAGS.seed).items():
    with open(os.path.join(FLAGS.out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    spam = sum(r["label"] == "spam" for r in records)
    print(f"{FLAGS.out}/{name}.jsonl: {len(records):,} e-mails ({spam:,} spam)")


if __name__ == "__main__":
  cli.run(main, required=("src", "out"))
