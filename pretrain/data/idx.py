"""Your images as IDX files (the MNIST format, plain or gzip'd) (data.name=idx); see pretrain/data/images.py."""
from pretrain.data import images


def load(config):
  return images.load_files(config)
