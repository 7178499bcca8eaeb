"""Your images as .npz arrays (data.name=npz); see pretrain/data/images.py."""
from pretrain.data import images


def load(config):
  return images.load_files(config)
