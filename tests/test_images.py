"""Image data: IDX (plain and gzip'd) and .npz builders, seeded splits, class filtering, preprocessing."""
import gzip
import struct

import numpy as np
import pytest

from pretrain import data
from pretrain.data import images
from pretrain.errors import ConfigError, DataError
from tests.conftest import tiny_config, rows


def write_idx(path, array, compress=False):
  """An IDX file as MNIST's: magic (0, 0, dtype 0x08, ndim), big-endian dims, then the bytes."""
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
  (gzip.open if compress else open)(path, "wb").write(payload)


def fake_digits(n=60, size=20, seed=0):
  """Images whose label is readable from them: a bright block at a label-dependent row."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 10
  x = rng.integers(0, 60, (n, size, size), dtype=np.uint8)
  for i, y in enumerate(labels):
    x[i, y * size // 10:(y + 1) * size // 10] = 255
  return x, labels.astype(np.uint8)


def write_mnist_like(folder, n=60, size=20, compress=True):
  folder.mkdir(parents=True, exist_ok=True)
  x, y = fake_digits(n, size)
  suffix = ".gz" if compress else ""
  write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", x, compress)
  write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", y, compress)
  return x, y


def image_config(path, name="idx", **kw):
  return tiny_config(**{"data.name": name, "data.path": path, "data.splits": "('train:40', 'finetune:10', 'test:*')",
                        "data.val_split": "test", **kw})


def test_idx_plain_and_gzip_read_the_same_images_with_labels(tmp_path):
  x, y = write_mnist_like(tmp_path / "gz", compress=True)
  write_mnist_like(tmp_path / "plain", compress=False)
  a, b = data.load(image_config(tmp_path / "gz")), data.load(image_config(tmp_path / "plain"))
  assert rows(a.train)["image"].shape == (40, 20, 20, 1) and rows(a.train)["image"].dtype == np.uint8
  assert len(a.val) == 10 and a.num_classes == 10 and a.vocab_size == 256
  np.testing.assert_array_equal(rows(a.train)["image"], rows(b.train)["image"])
  # Every stored image is one of the originals, with its own label.
  index = {x[i].tobytes(): y[i] for i in range(len(x))}
  for img, label in zip(rows(a.train)["image"], rows(a.train)["label"]):
    assert index[img[..., 0].tobytes()] == label


def test_splits_are_a_seeded_partition(tmp_path):
  write_mnist_like(tmp_path / "d")
  cfg = lambda seed, val: image_config(tmp_path / "d", **{"data.split_seed": seed, "data.val_split": val})
  train, fine, test = (rows(data.load(cfg(0, v)).val)["image"] for v in ("train", "finetune", "test"))
  assert (len(train), len(fine), len(test)) == (40, 10, 10)
  keys = [{im.tobytes() for im in s} for s in (train, fine, test)]
  assert len(keys[0] | keys[1] | keys[2]) == 60  # disjoint and complete
  np.testing.assert_array_equal(rows(data.load(cfg(0, "finetune")).val)["image"], fine)
  assert {im.tobytes() for im in rows(data.load(cfg(1, "finetune")).val)["image"]} != keys[1]


def test_npz_with_keras_style_keys_and_unlabeled_arrays(tmp_path):
  x, y = fake_digits(60, 20)
  np.savez(tmp_path / "mnist.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
  ds = data.load(image_config(tmp_path / "mnist.npz", name="npz"))
  assert rows(ds.train)["image"].shape == (40, 20, 20, 1) and ds.num_classes == 10
  (tmp_path / "u").mkdir()
  np.savez(tmp_path / "u" / "rgb.npz", images=np.zeros((60, 8, 8, 3), np.uint8))
  ds = data.load(image_config(tmp_path / "u", name="npz"))
  assert rows(ds.train)["image"].shape == (40, 8, 8, 3) and "label" not in ds.train.spec and ds.num_classes == 0
  with pytest.raises(DataError, match="needs labels"):
    data.load(image_config(tmp_path / "u", name="npz", **{"data.classes": "(0, 1)"}))


def test_classes_keep_and_renumber_labels(tmp_path):
  write_mnist_like(tmp_path / "d")
  ds = data.load(image_config(tmp_path / "d", **{"data.classes": "(5, 6, 7, 8, 9)"}))
  assert ds.num_classes == 5
  for split in (ds.train, ds.val):
    labels = rows(split)["label"]
    assert set(labels.tolist()) <= set(range(5)) and len(labels) > 0
    # The fake digits carry their label as the row of the bright block: label 5 + k sits at rows 2(5+k).
    bright = [int(np.argmax(im[:, 0, 0] == 255)) for im in rows(split)["image"]]
    assert bright == [2 * (5 + int(k)) for k in labels]


def test_missing_or_bad_files_give_one_line_errors(tmp_path):
  with pytest.raises(DataError, match="--config.data.path"):
    data.load(image_config(tmp_path / "nowhere"))
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
  with pytest.raises(DataError, match="truncated"):
    data.load(image_config(tmp_path / "bad"))
  write_mnist_like(tmp_path / "d")
  with pytest.raises(DataError, match="ask for more than the 60 images"):
    data.load(image_config(tmp_path / "d", **{"data.splits": "('train:50', 'test:20')"}))
  with pytest.raises(ConfigError, match="NAME:COUNT"):
    data.load(image_config(tmp_path / "d", **{"data.splits": "('train', 'test:20')"}))
  with pytest.raises(DataError, match="--config.data.val_split"):
    data.load(image_config(tmp_path / "d", **{"data.val_split": "validation"}))
  with pytest.raises(ConfigError, match="preprocess"):
    data.load(image_config(tmp_path / "d", **{"data.preprocess": "('sharpen',)"}))


def test_preprocessing_functions():
  x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1) * 8
  t = images.make_transform(("scale",))
  np.testing.assert_allclose(t({"image": x}, None)["image"], x / 255.0)
  b = images.make_transform(("binarize",))({"image": x}, None)["image"]
  assert b.dtype == np.uint8 and set(np.unique(b)) <= {0, 1} and np.array_equal(b, (x >= 128).astype(np.uint8))
  padded = images.make_transform(("pad:2",))({"image": x}, None)["image"]
  assert padded.shape == (2, 8, 8, 1) and padded[:, :2].sum() == 0 and np.array_equal(padded[:, 2:6, 2:6], x)
  resized = images.make_transform(("resize:8",))({"image": x}, None)["image"]
  assert resized.shape == (2, 8, 8, 1) and resized.dtype == np.uint8
  assert images.make_transform(("resize:4",))({"image": x}, None)["image"].tolist() == x.tolist()
  assert images.levels(("binarize",)) == 2 and images.levels(("scale",)) == 256
  assert images.levels(("sample_binarize",)) == 2


def test_stochastic_binarization_is_seeded_in_training_and_fixed_in_eval():
  x = np.full((2, 40, 40, 1), 64, np.uint8)  # probability 64/255 of a 1 at every pixel ...
  x[1, :20] = 200  # ... but the second image differs
  t = images.make_transform(("sample_binarize",))
  rngs = lambda seed: [np.random.default_rng([seed, i, 2]) for i in range(2)]
  a, b, c = (t({"image": x}, rngs(s))["image"] for s in (0, 0, 1))
  assert a.dtype == np.uint8 and set(np.unique(a)) == {0, 1} and abs(a[0].mean() - 64 / 255) < 0.03
  assert np.array_equal(a, b) and not np.array_equal(a, c)
  e1, e2 = t({"image": x}, None)["image"], t({"image": x[::-1]}, None)["image"]
  assert np.array_equal(e1, e2[::-1])  # one fixed sample per image, whatever the batch


def test_random_augmentation_is_a_pure_function_of_seed_and_step(tmp_path):
  write_mnist_like(tmp_path / "d")
  ds = data.load(image_config(tmp_path / "d", **{"data.preprocess": "('pad:2', 'random_crop:20', 'random_flip')"}))
  batch = lambda step, seed=0: data.train_batch(ds.train, step, seed=seed, batch_size=8, seq_len=1)["image"]
  np.testing.assert_array_equal(batch(3), batch(3))  # a resumed run sees the same augmented batch
  assert batch(3).shape == (8, 20, 20, 1)
  assert not np.array_equal(batch(3), batch(3, seed=1))
  # Over a few batches, crops land away from the centre and some images are mirrored.
  stored = {im.tobytes() for im in rows(ds.train)["image"]}
  assert any(im.tobytes() not in stored for s in range(4) for im in batch(s))
  # Evaluation is deterministic: the centre crop of the padded image is the image, never flipped.
  ev = next(data.eval_batches(ds.val, batch_size=4, seq_len=1))["image"]
  np.testing.assert_array_equal(ev, rows(ds.val)["image"][:4])


def test_catalog_image_dataset_by_name_and_fast_offline_error(tmp_path, monkeypatch):
  """A TFDS catalog dataset with an `image` feature loads by name once prepared; an unprepared one whose
  download host is unreachable stops at once with the manual_dir hint (as for text)."""
  import tensorflow_datasets as tfds
  from pretrain.data import catalog

  class ZooCatalogDigits(tfds.core.GeneratorBasedBuilder):  # Defining it registers the name in the catalog.
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(20, 20, 1), dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
      x, y = fake_digits(30, 20)
      return {"train": self._generate_examples(x[:20], y[:20]), "test": self._generate_examples(x[20:], y[20:])}

    def _generate_examples(self, x, y):
      for i in range(len(x)):
        yield i, {"image": x[i][..., None], "label": int(y[i])}

  data_dir = str(tmp_path / "tfds")
  tfds.builder("zoo_catalog_digits", data_dir=data_dir, file_format="array_record").download_and_prepare()
  ds = data.load(tiny_config(**{"data.name": "zoo_catalog_digits", "data.data_dir": data_dir,
                                "data.val_split": "test", "data.preprocess": "('scale',)"}))
  assert ds.num_classes == 10 and rows(ds.train)["image"].shape == (20, 20, 20, 1) and len(ds.val) == 10
  assert data.train_batch(ds.train, 0, seed=0, batch_size=4, seq_len=1)["image"].dtype == np.float32

  monkeypatch.setattr(catalog, "_reachable", lambda url: False)  # As on a machine without a network.
  with pytest.raises(DataError, match="manual_dir"):
    data.load(tiny_config(**{"data.name": "mnist", "data.data_dir": str(tmp_path / "empty")}))
