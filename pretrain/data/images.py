"""Images from IDX files (the MNIST format, plain or gzip'd) or .npz arrays, as a TFDS dataset.

The builder stores uint8 `image` [H, W, C] Tensors (not tfds Image features, whose encoder needs
TensorFlow) and an int64 `label` when the files have labels, in array_record files. Its splits are drawn
from one seeded permutation of all the images, so "train:8000", "finetune:1000", "test:1000" of the
10,000 MNIST test images are the same images on every machine.

Preprocessing is a list of small pure functions named in `data.preprocess`, applied to each batch in
order. The random ones (random_crop, random_flip, sample_binarize) draw from one generator per example
keyed by (seed, position in the training stream), so a resumed run sees the same augmented batches;
evaluation uses deterministic counterparts (centre crop, no flip, one fixed binary sample per image).
"""
import gzip
import hashlib
import os
import zipfile
import zlib

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import Dataset, Records, builders, corpus
from pretrain.errors import ConfigError, DataError

FORMATS = ("idx", "npz")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_NPZ_PAIRS = {"images": "labels", "image": "label", "x": "y"}  # image key prefix -> label key prefix


# ----------------------------------------------------------------------------------------------- reading


def _open(path):
  with open(path, "rb") as f:
    gzipped = f.read(2) == b"\x1f\x8b"
  return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _idx_header(f, path):
  head = f.read(4)
  if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or head[3] == 0:
    return None
  dims = np.frombuffer(f.read(4 * head[3]), dtype=">u4")
  if len(dims) != head[3]:
    raise DataError(f"{path} is a truncated IDX file; replace it with a complete copy")
  return np.dtype(_IDX_DTYPES[head[2]]), tuple(int(d) for d in dims)


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzip'd or not) as a numpy array of its declared type and shape."""
  with _open(path) as f:
    header = _idx_header(f, path)
    if header is None:
      raise DataError(f"{path} is not an IDX file (bad magic number); data.name=idx reads MNIST-format files")
    dtype, shape = header
    data = f.read()
  count = int(np.prod(shape))
  if len(data) < count * dtype.itemsize:
    raise DataError(f"{path} holds {len(data)} bytes of data, its header promises {count * dtype.itemsize}; "
                    "replace it with a complete copy")
  return np.frombuffer(data[:count * dtype.itemsize], dtype=dtype).reshape(shape)


def _files(path: str, fmt: str) -> list[str]:
  files = corpus.files_under(path)
  if files is None:
    raise DataError(f"data path {path!r} does not exist; set --config.data.path to a folder of IDX files "
                    "(MNIST format) or an .npz file")
  if os.path.isfile(path):
    return files
  if fmt == "npz":
    files = [f for f in files if f.endswith(".npz")]
  else:
    files = [f for f in files if not f.endswith((".npz", ".lock", ".json", ".md", ".txt"))]
  if not files:
    raise DataError(f"{path} has no {fmt} files; point --config.data.path at a folder or file of them")
  return files


def _idx_pairs(files):
  """(images file, labels file or None) pairs: labels are the 1-d IDX file named like the images file
  with 'images' -> 'labels' (and idx3 -> idx1), or the only 1-d file beside the only image file."""
  kinds = {}
  for f in files:
    with _open(f) as handle:
      header = _idx_header(handle, f)
    if header is not None:
      kinds[f] = len(header[1])
  images = [f for f, ndim in kinds.items() if ndim >= 3]
  labels = [f for f, ndim in kinds.items() if ndim == 1]
  if not images:
    raise DataError(f"no IDX image files (3 or 4 dimensions) among {[os.path.basename(f) for f in files]}")
  pairs = []
  for f in images:
    name = os.path.join(os.path.dirname(f), os.path.basename(f).replace("images", "labels").replace("idx3", "idx1"))
    match = name if name in labels else (labels[0] if len(images) == 1 and len(labels) == 1 else None)
    pairs.append((f, match))
  return pairs


def _npz_arrays(path, load: bool):
  """[(image key, label key or None)] of an .npz file, or their arrays when `load`."""
  with np.load(path, allow_pickle=False) as z:
    keys, out = set(z.files), []
    for k in sorted(keys):
      prefix, sep, suffix = k.partition("_")
      if prefix in _NPZ_PAIRS:
        label = _NPZ_PAIRS[prefix] + sep + suffix
        label = label if label in keys else None
        out.append((z[k], z[label] if label else None) if load else (k, label))
  if not out:
    raise DataError(f"{path} has no image array: name it 'images', 'image' or 'x' (or x_train, x_test, ...) "
                    "and its labels 'labels', 'label' or 'y'")
  return out


def _npz_shape(path, key):
  with zipfile.ZipFile(path) as zf, zf.open(key + ".npy") as f:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)[0]


def scan(path: str, fmt: str):
  """(image shape [H, W, C], whether the images have labels) from the files' headers only."""
  files = _files(path, fmt)
  if fmt == "idx":
    entries = []
    for images, labels in _idx_pairs(files):
      with _open(images) as handle:
        entries.append((_idx_header(handle, images)[1][1:], labels is not None))
  else:
    entries = [(tuple(_npz_shape(f, key))[1:], label is not None)
               for f in files for key, label in _npz_arrays(f, load=False)]
  shapes = {s + (1,) if len(s) == 2 else s for s, _ in entries}
  if len(shapes) != 1 or len(next(iter(shapes))) != 3:
    raise DataError(f"images in {path} have shapes {sorted(shapes)}; they need one shape [H, W] or [H, W, C]")
  if len({has for _, has in entries}) > 1:
    raise DataError(f"some image files in {path} have labels and some do not; give labels for all or none")
  return next(iter(shapes)), entries[0][1]


def read_all(path: str, fmt: str):
  """(images uint8 [N, H, W, C], labels int64 [N] or None), files and arrays in sorted order."""
  if fmt == "idx":
    files = _files(path, fmt)
    pairs = [(read_idx(i), read_idx(l) if l else None) for i, l in _idx_pairs(files)]
  else:
    pairs = [p for f in _files(path, fmt) for p in _npz_arrays(f, load=True)]
  images, labels = [], []
  for x, y in pairs:
    if x.dtype != np.uint8 and not (np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 255):
      raise DataError(f"images in {path} are {x.dtype}; this builder reads 8-bit pixel levels 0..255 (uint8)")
    if y is not None and len(y) != len(x):
      raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    images.append(x.astype(np.uint8).reshape(*x.shape[:3], -1))
    labels.append(None if y is None else y.astype(np.int64))
  labels = None if labels[0] is None else np.concatenate(labels)
  return np.concatenate(images), labels


def fingerprint(path: str, fmt: str) -> str:
  stats = [(os.path.realpath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in _files(path, fmt)]
  return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


def parse_splits(specs) -> list[tuple[str, int | None]]:
  """("train:8000", "test:*") -> [("train", 8000), ("test", None)]; None takes the images left over."""
  out = []
  for spec in specs:
    name, _, count = str(spec).partition(":")
    if not name or (count != "*" and not count.isdigit()) or (count.isdigit() and int(count) == 0):
      raise ConfigError(f"data.splits entry {spec!r} must be NAME:COUNT or NAME:* (the rest), "
                        "e.g. ('train:8000', 'finetune:1000', 'test:1000')")
    out.append((name, None if count == "*" else int(count)))
  if sum(c is None for _, c in out) > 1 or len({n for n, _ in out}) != len(out):
    raise ConfigError(f"data.splits={tuple(specs)} needs distinct names and at most one '*'")
  return out


class ImageFiles(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Images (and labels, when present) from IDX or .npz files, split by a seeded permutation."""
  VERSION = tfds.core.Version("1.0.0")
  disable_shuffling = True  # Records keep the permutation's order: the same on every machine.

  def __init__(self, *, path: str, format: str, splits: tuple, split_seed: int, fingerprint: str, **kwargs):
    del fingerprint  # Only part of the folder name: changed files are a new dataset.
    self._path, self._format, self._split_seed = path, format, split_seed
    self._splits = parse_splits(splits)
    self._shape, self._labeled = scan(path, format)
    super().__init__(**kwargs)

  def _info(self):
    features = {"image": tfds.features.Tensor(shape=self._shape, dtype=np.uint8)}
    if self._labeled:
      features["label"] = tfds.features.Tensor(shape=(), dtype=np.int64)
    return tfds.core.DatasetInfo(builder=self, description=f"{self._format} images from {self._path}",
                                 features=tfds.features.FeaturesDict(features), metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    images, labels = read_all(self._path, self._format)
    fixed = sum(c for _, c in self._splits if c is not None)
    if fixed > len(images) or (fixed == len(images) and any(c is None for _, c in self._splits)):
      specs = [f"{name}:{'*' if count is None else count}" for name, count in self._splits]
      raise DataError(f"data.splits {specs} ask for more than the {len(images)} images in {self._path}; "
                      "lower --config.data.splits")
    order = np.random.default_rng(self._split_seed).permutation(len(images))
    generators, start = {}, 0
    for name, count in self._splits:
      count = len(images) - fixed if count is None else count
      generators[name] = self._generate_examples(images, labels, order[start:start + count])
      start += count
    self.info.metadata.update(num_images=len(images), split_seed=self._split_seed,
                              num_classes=int(labels.max()) + 1 if labels is not None else 0)
    return generators

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      example = {"image": images[i]}
      if labels is not None:
        example["label"] = labels[i]
      yield int(i), example


# ------------------------------------------------------------------------------------------ preprocessing


def _scale(x, rngs):
  del rngs
  return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x


def _binarize(x, rngs):
  del rngs
  return (x >= (128 if x.dtype == np.uint8 else 0.5)).astype(np.uint8)


def _sample_binarize(x, rngs):
  """Stochastic binarization: 1 with probability level / 255. Training draws a fresh sample each time an
  image is seen (rngs); evaluation uses one fixed sample per image, seeded by its content."""
  p = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
  if rngs is None:
    rngs = [np.random.default_rng(zlib.crc32(image.tobytes())) for image in x]
  u = np.stack([rng.random(image.shape, dtype=np.float32) for rng, image in zip(rngs, x)])
  return (u < p).astype(np.uint8)


def _pad(p):
  return lambda x, rngs: np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def _resize(size):
  """Bilinear resize to size x size (align_corners=False, as jax.image.resize)."""
  def resize(x, rngs):
    del rngs
    out = x.astype(np.float32)
    for axis, n in ((1, out.shape[1]), (2, out.shape[2])):
      pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
      lo = np.floor(pos).astype(int)
      hi = np.minimum(lo + 1, n - 1)
      frac = (pos - lo).reshape([-1 if a == axis else 1 for a in range(4)])
      out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return np.round(out).astype(np.uint8) if x.dtype == np.uint8 else out
  return resize


def _random_crop(size):
  def crop(x, rngs):
    h, w = x.shape[1:3]
    if size > min(h, w):
      raise ConfigError(f"random_crop:{size} is larger than the {h}x{w} images; pad first, e.g. "
                        f"data.preprocess=('pad:{(size - min(h, w) + 1) // 2}', 'random_crop:{size}')")
    if rngs is None:  # Evaluation: the centre crop.
      top, left = (h - size) // 2, (w - size) // 2
      return x[:, top:top + size, left:left + size]
    out = np.empty((len(x), size, size, x.shape[3]), x.dtype)
    for i, rng in enumerate(rngs):
      top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
      out[i] = x[i, top:top + size, left:left + size]
    return out
  return crop


def _random_flip(x, rngs):
  if rngs is None:
    return x
  flip = np.array([rng.random() < 0.5 for rng in rngs])
  return np.where(flip[:, None, None, None], x[:, :, ::-1], x)


_SIMPLE = {"scale": _scale, "binarize": _binarize, "sample_binarize": _sample_binarize, "random_flip": _random_flip}
_SIZED = {"pad": _pad, "resize": _resize, "random_crop": _random_crop}
PREPROCESS_NAMES = ("scale", "binarize", "sample_binarize", "pad:P", "resize:S", "random_crop:S", "random_flip")


def make_transform(names):
  """data.preprocess -> (batch, rngs or None) -> batch, a pure function of its arguments."""
  steps = []
  for spec in names:
    name, _, arg = str(spec).partition(":")
    if name in _SIMPLE and not arg:
      steps.append(_SIMPLE[name])
    elif name in _SIZED and arg.isdigit() and int(arg) > 0:
      steps.append(_SIZED[name](int(arg)))
    else:
      raise ConfigError(f"data.preprocess entry {spec!r} is not one of {', '.join(PREPROCESS_NAMES)}")
  if not steps:
    return None

  def transform(batch, rngs):
    x = batch["image"]
    for fn in steps:
      x = fn(x, rngs)
    return {**batch, "image": x}
  return transform


def levels(names) -> int:
  """Distinct pixel values after preprocessing: 2 once binarized, else 256 (the pixel model's alphabet)."""
  return 2 if any(str(n) in ("binarize", "sample_binarize") for n in names) else 256


def load_files(config) -> Dataset:
  """data.name=idx or npz: the image files at data.path, split and preprocessed as data.* says."""
  d = config.data
  if not d.path or not os.path.exists(d.path):
    where = f"data path {d.path!r} does not exist" if d.path else f"data.name={d.name} needs a path"
    raise DataError(f"{where}; set --config.data.path to IDX files (MNIST format) or .npz arrays")
  path = os.path.realpath(d.path)
  builder = builders.prepare(ImageFiles, builders.default_data_dir(d.data_dir), path=path, format=d.name,
                             splits=tuple(d.splits), split_seed=d.split_seed, fingerprint=fingerprint(path, d.name))
  meta = dict(builder.info.metadata)
  return image_dataset(f"{d.name}:{d.path}", d, builder, meta.get("num_classes", 0), meta)


def image_dataset(name, d, builder, num_classes, meta) -> Dataset:
  """Image records of the train and val splits, label-filtered, with the config's preprocessing."""
  transform = make_transform(d.preprocess)
  splits = []
  for key in ("train_split", "val_split"):
    split = d[key]
    if split not in builder.info.splits:
      raise DataError(f"{builder.name} has no split {split!r} (it has {', '.join(builder.info.splits)}); "
                      f"set --config.data.{key}")
    records = builders.records(builder, split, keys=("image", "label"))
    if d.classes:
      records = _keep_classes(records, tuple(d.classes), f"split {split!r} of {builder.name}")
    splits.append(Records(records.source, transform, records.index))
  return Dataset(name, *splits, vocab_size=levels(d.preprocess), num_classes=len(d.classes) or num_classes,
                 metadata=meta)


def _keep_classes(records: Records, classes, where) -> Records:
  """Examples whose label is in `classes`, relabelled by position in it: (5, 6) -> 5 becomes 0, 6 becomes 1."""
  if "label" not in records.spec:
    raise DataError(f"data.classes={classes} needs labels; {where} has none (set --config.data.classes='()')")
  label = records.column("label")
  keep = np.isin(label, classes)
  if not keep.any():
    raise DataError(f"{where} has no examples with labels {classes}; check --config.data.classes")
  new_label = np.full(max(int(label.max()), max(classes)) + 1, -1, np.int32)
  new_label[list(classes)] = np.arange(len(classes))
  return records.subset(np.flatnonzero(keep)).mapped(lambda b: {**b, "label": new_label[b["label"]]})
