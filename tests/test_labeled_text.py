"""Your own labeled text (data.label_field): JSON lines, CSV/TSV, Parquet and class subfolders read as the same
examples; label ids in sorted order; data.val_path; the stratified split; labels_per_class; text that is not
UTF-8; the one-line refusals; F1 and the confusion matrix against scikit-learn's."""
import csv
import gzip
import json
import os

import numpy as np
import pytest

from pretrain import data
from pretrain.errors import ConfigError, DataError
from pretrain.objectives import classification
from pretrain.trainer import metrics, train
from tests.conftest import read_metrics, rows, tiny_config

LABELS = ("spam", "ham", "ham", "ham")  # Imbalanced, as real labels are: 25% spam.


def mail(i: int) -> tuple[str, str]:
  """A record: spam texts offer something; lengths vary; some hold a newline, a quote and a comma."""
  label = LABELS[i % len(LABELS)]
  rng = np.random.default_rng(i)
  words = " ".join(rng.choice(["the", "report", "meeting", "is", "at", "noon"], int(rng.integers(1, 12))))
  offer = "buy cheap pills now" if label == "spam" else "see you, \"Bob\""
  return f"Subject: {i}\n\n{words} {offer}", label


def write_formats(root, records, name: str) -> dict:
  """The records as .jsonl, .jsonl.gz, .csv, .tsv, .parquet and class subfolders; {format: path}."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  paths = {f: os.path.join(root, f"{name}.{f}") for f in ("jsonl", "jsonl.gz", "csv", "tsv", "parquet")}
  lines = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in records)
  open(paths["jsonl"], "w").write(lines)
  with gzip.open(paths["jsonl.gz"], "wt") as f:
    f.write(lines)
  for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
    with open(paths[fmt], "w", newline="") as f:
      writer = csv.writer(f, delimiter=delimiter)
      writer.writerow(["label", "text"])  # Columns in either order: the header names them.
      writer.writerows((y, t) for t, y in records)
  pq.write_table(pa.table({"text": [t for t, _ in records], "label": [y for _, y in records]}), paths["parquet"],
                 row_group_size=7)
  paths["subfolder"] = os.path.join(root, f"{name}_dir")
  for i, (t, y) in enumerate(records):
    os.makedirs(os.path.join(paths["subfolder"], y), exist_ok=True)
    with open(os.path.join(paths["subfolder"], y, f"{i:04d}.txt"), "w", newline="") as f:
      f.write(t)
  return paths


@pytest.fixture(scope="module")
def mails(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("mails"))
  # The subfolders list ham before spam, so the same order in every format: ham first, then spam.
  train = sorted((mail(i) for i in range(120)), key=lambda r: r[1])
  val = sorted((mail(i) for i in range(120, 160)), key=lambda r: r[1])
  return {"train": write_formats(root, train, "train"), "val": write_formats(root, val, "val"),
          "records": {"train": train, "val": val}, "root": root}


def labeled(path, **overrides):
  return tiny_config(**{"objective": "classification", "data.name": "text", "data.path": path,
                        "data.tokenizer": "byte", "data.label_field": "subfolder" if path.endswith("_dir") else "label",
                        "model.context": 64, **overrides})


@pytest.mark.parametrize("fmt", ["jsonl.gz", "csv", "tsv", "parquet", "subfolder"])
def test_every_format_reads_the_same_examples(mails, fmt):
  want = data.load(labeled(mails["train"]["jsonl"], **{"data.val_path": mails["val"]["jsonl"]}))
  got = data.load(labeled(mails["train"][fmt], **{"data.val_path": mails["val"][fmt]}))
  assert got.label_names == want.label_names == ("ham", "spam") and got.num_classes == 2
  for split in ("train", "val"):
    a, b = rows(getattr(want, split)), rows(getattr(got, split))
    assert set(a) == {"tokens", "token_mask", "label"}
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # The rows are the texts' bytes, cut to model.context, in the records' order, labeled by sorted name.
  first = rows(want.train)
  text, label = mails["records"]["train"][0]
  ids = np.frombuffer(text.encode(), np.uint8)[:64]
  np.testing.assert_array_equal(first["tokens"][0, :len(ids)], ids)
  assert first["token_mask"][0].sum() == len(ids) and first["label"][0] == want.label_names.index(label)
  assert len(want.val) == 40 and list(rows(want.val)["label"]) == [0] * 30 + [1] * 10  # val_path used whole.


def test_label_ids_follow_sorted_names(tmp_path):
  path = tmp_path / "numbers.jsonl"
  path.write_text("".join(json.dumps({"text": f"t{i}", "label": [10, 2, 9][i % 3]}) + "\n" for i in range(30)))
  ds = data.load(labeled(str(path)))
  assert ds.label_names == ("2", "9", "10")  # Numerically, not "10" < "2".
  path = tmp_path / "names.csv"
  path.write_text("text,label\n" + "".join(f"t{i},{['b', 'c', 'a'][i % 3]}\n" for i in range(30)))
  ds = data.load(labeled(str(path)))
  assert ds.label_names == ("a", "b", "c")
  texts = {t: y for t, y in (r.split(",") for r in path.read_text().splitlines()[1:])}
  both = rows(ds.train)
  for ids, y in zip(both["tokens"], both["label"]):
    text = bytes(ids[ids > 0].astype(np.uint8)).decode()
    assert ds.label_names[y] == texts[text]


def test_stratified_seeded_validation_and_labels_per_class(mails):
  path = mails["train"]["jsonl"]  # 90 ham, 30 spam.
  ds = data.load(labeled(path, **{"data.val_fraction": 0.2}))
  val_labels = rows(ds.val)["label"]
  assert (val_labels == 0).sum() == 18 and (val_labels == 1).sum() == 6 and len(ds.train) == 96
  again = data.load(labeled(path, **{"data.val_fraction": 0.2}))
  other = data.load(labeled(path, **{"data.val_fraction": 0.2, "data.split_seed": 1}))
  np.testing.assert_array_equal(rows(again.val)["tokens"], rows(ds.val)["tokens"])
  assert not np.array_equal(rows(other.val)["tokens"], rows(ds.val)["tokens"])
  train_texts = {bytes(t) for t in rows(ds.train)["tokens"].astype(np.uint8)}
  assert not train_texts & {bytes(t) for t in rows(ds.val)["tokens"].astype(np.uint8)}
  few = data.load(labeled(path, **{"data.val_fraction": 0.2, "data.labels_per_class": 4}))
  assert sorted(rows(few.train)["label"]) == [0] * 4 + [1] * 4 and len(few.val) == len(ds.val)


def test_next_token_reads_the_same_records_as_documents(mails):
  pretraining = {"data.name": "text", "data.path": mails["train"]["csv"], "data.tokenizer": "byte",
                 "data.val_path": mails["val"]["csv"], "data.label_field": "label"}
  ds = data.load(tiny_config(**pretraining))
  assert isinstance(ds.train, data.TokenStream) and ds.num_classes == 0
  texts = mails["records"]["val"]
  assert len(ds.val) == sum(len(t.encode()) + 1 for t, _ in texts)  # Each document and its end-of-text, whole.
  assert ds.decode(ds.val.tokens[:len(texts[0][0].encode())]) == texts[0][0]
  # A fine-tuning run on the labeled form reads the same ids: the vocabularies agree.
  assert data.load(labeled(mails["train"]["csv"], **{"data.val_path": mails["val"]["csv"]})).vocabulary == ds.vocabulary
  chars = {"data.tokenizer": "char", "data.val_path": mails["val"]["csv"]}
  assert (data.load(labeled(mails["train"]["csv"], **chars)).vocabulary
          == data.load(tiny_config(**{**pretraining, **chars})).vocabulary)


def test_text_that_is_not_utf8(tmp_path):
  folder = tmp_path / "classes_dir"
  for label, texts in (("a", [b"caf\xe9 ok", b"plain"]), ("b", [b"more", b"text \xff here"])):
    (folder / label).mkdir(parents=True)
    for i, t in enumerate(texts):
      (folder / label / f"{i}.txt").write_bytes(t)
  with pytest.raises(DataError, match=r"a/0.txt is not UTF-8 .* at byte 3\); set --config.data.decode_errors=replace"):
    data.load(labeled(str(folder), **{"data.tokenizer": "char", "data.val_fraction": 0.5}))
  ds = data.load(labeled(str(folder), **{"data.tokenizer": "char", "data.decode_errors": "replace",
                                         "data.val_fraction": 0.5}))
  assert "\ufffd" in ds.vocab
  raw = data.load(labeled(str(folder), **{"data.val_fraction": 0.5}))  # The byte tokenizer takes the bytes as they are.
  kept = {bytes(r[m > 0].astype(np.uint8)) for r, m in zip(*(lambda b: (b["tokens"], b["token_mask"]))(rows(raw.train)))}
  kept |= {bytes(r[m > 0].astype(np.uint8)) for r, m in zip(*(lambda b: (b["tokens"], b["token_mask"]))(rows(raw.val)))}
  assert kept == {b"caf\xe9 ok", b"plain", b"more", b"text \xff here"}
  # A plain text file, unlabeled: strict names the byte offset; replace reads on.
  text = tmp_path / "corpus.txt"
  text.write_bytes(b"hello " * 40 + b"\x80 world " * 40)
  unlabeled = {"data.name": "text", "data.path": str(text), "data.tokenizer": "char"}
  with pytest.raises(DataError, match=r"corpus.txt is not UTF-8 .* at byte 240\)"):
    data.load(tiny_config(**unlabeled))
  assert "\ufffd" in data.load(tiny_config(**unlabeled, **{"data.decode_errors": "replace"})).vocab
  # JSON lines: the byte tokenizer keeps the bytes of a non-UTF-8 line; char names the line.
  lines = tmp_path / "bad.jsonl"
  lines.write_bytes(b'{"text": "ok", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n' * 4)
  with pytest.raises(DataError, match=r"bad.jsonl line 2 is not UTF-8"):
    data.load(labeled(str(lines), **{"data.tokenizer": "char"}))
  ds = data.load(labeled(str(lines), **{"data.val_fraction": 0.25}))
  assert b"caf\xe9" in {bytes(r[m > 0].astype(np.uint8)) for r, m in zip(rows(ds.train)["tokens"], rows(ds.train)["token_mask"])}


def test_one_line_refusals(tmp_path, mails):
  def refused(content, match, name="bad.jsonl", **overrides):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises((DataError, ConfigError), match=match) as error:
      data.check(labeled(str(path), **overrides))
      data.load(labeled(str(path), **overrides))
    assert "\n" not in str(error.value)
  refused('{"text": "a", "label": 1}\n{"text": "b"}\n', r"bad.jsonl line 2 has no label in 'label' \(it has: text\)")
  refused('{"text": "a", "label": 1}\n{"text": " ", "label": 2}\n', r"bad.jsonl line 2 has an empty text in 'text'")
  refused("".join(json.dumps({"text": f"t{i}", "label": "only"}) + "\n" for i in range(9)), r"one class \('only'\)")
  refused('{"text": "a", "label": [1]}\n', r"line 1: label \[1\] in 'label' is a list")
  refused("text,label\na,1\nb\n", r"bad.csv record ending on line 3 has 1 fields, its header 2", name="bad.csv")
  refused("just prose\n", r"plain text file, which holds no labels", name="prose.txt")
  refused("text,label\na,1\n", r"cols.csv record ending on line 2 has no 'body' field \(it has: text, label\)",
          name="cols.csv",
          **{"data.text_field": "body"})
  with pytest.raises(ConfigError, match="data.label_field and data.text_segments both label"):
    data.check(labeled(mails["train"]["jsonl"], **{"data.text_segments": 2}))
  with pytest.raises(ConfigError, match=r"data.val_path='/nowhere' does not exist"):
    data.check(labeled(mails["train"]["jsonl"], **{"data.val_path": "/nowhere"}))
  with pytest.raises(DataError, match="is not in a class subfolder"):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.txt").write_text("x")
    data.load(labeled(str(tmp_path / "flat"), **{"data.label_field": "subfolder"}))


def test_f1_and_confusion_match_scikit_learn():
  import jax.numpy as jnp
  from sklearn.metrics import confusion_matrix, f1_score
  rng = np.random.default_rng(0)
  truth = rng.choice(3, size=64, p=[0.6, 0.3, 0.1])
  logits = rng.normal(size=(64, 3)) + 2.0 * np.eye(3)[np.where(rng.random(64) < 0.7, truth, rng.integers(0, 3, 64))]
  predicted = logits.argmax(-1)
  mask = (np.arange(64) < 60).astype(np.float32)  # The last 4 rows are padding: not counted.

  class Fixed:  # A model whose logits are given.
    def apply(self, variables, inputs, train, rngs):
      return jnp.asarray(logits, jnp.float32)
  batch = {"image": np.zeros((64, 1)), "label": truth.astype(np.int32), "mask": mask}
  sums, _ = classification.loss(Fixed(), {}, batch, train=False, rng=None)
  want = confusion_matrix(truth[:60], predicted[:60], labels=[0, 1, 2])
  np.testing.assert_array_equal(np.asarray(sums["confusion"]), want)
  np.testing.assert_allclose(classification.f1_scores(want), f1_score(truth[:60], predicted[:60], average=None,
                                                                     labels=[0, 1, 2]))
  assert classification.macro_f1(want) == pytest.approx(f1_score(truth[:60], predicted[:60], average="macro"))
  # A class never true nor predicted does not enter the macro mean (scikit-learn's default labels).
  assert classification.macro_f1([[5, 1, 0], [2, 3, 0], [0, 0, 0]]) == pytest.approx(
      f1_score([0] * 6 + [1] * 5, [0] * 5 + [1] + [0] * 2 + [1] * 3, average="macro"))
  # Summed over eval batches, then named.
  halves = [{"loss_sum": 1.0, "count": 30.0, "correct": 20.0, "confusion": want / 2}] * 2
  out = classification.summarize(metrics.summarize_eval(halves), data.Dataset(
      "x", None, None, vocab_size=1, num_classes=3, label_names=("a", "b", "c")), True)
  assert out["confusion"] == want.tolist() and out["labels"] == ["a", "b", "c"]
  assert out["f1/c"] == pytest.approx(f1_score(truth[:60], predicted[:60], average=None)[2])
  table = metrics.confusion_table(out["confusion"], out["labels"])
  assert table.splitlines()[1].split() == ["a", "|", *map(str, want[0])]


def test_fine_tuning_on_labeled_records_reports_f1_and_the_final_confusion(tmp_path, mails):
  """Pretrain on the records' text, fine-tune on their labels; rows carry F1 by label name."""
  from pretrain import finetune, report
  files = {"data.path": mails["train"]["jsonl"], "data.val_path": mails["val"]["jsonl"], "data.tokenizer": "byte",
           "data.name": "text", "model.context": 64, "train.steps": 4, "train.eval_every": 2, "train.log_every": 2,
           "train.checkpoint_every": 4}
  pretrained = str(tmp_path / "pretrained")
  train.train(tiny_config(**files), pretrained)
  tuned = str(tmp_path / "tuned")
  final = finetune.train(tiny_config(**files, objective="classification", **{
      "data.label_field": "label", "data.labels_per_class": 8, "init.workdir": pretrained}), tuned)
  val = read_metrics(tuned, "val")
  assert [r["step"] for r in val] == [2, 4] and all("macro_f1" in r and "f1/spam" in r for r in val)
  assert "confusion" not in val[0] and val[-1]["labels"] == ["ham", "spam"]
  assert np.sum(val[-1]["confusion"]) == val[-1]["count"] == 40 and final["macro_f1"] == val[-1]["macro_f1"]
  text = open(report.write(str(tmp_path / "report"), [tuned])).read()
  assert "val macro-F1" in text and "val F1 spam" in text and "| true \\ predicted | ham | spam |" in text
