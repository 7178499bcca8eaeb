"""PixelCNN on binarized MNIST: log p(x) = sum_i log p(x_i | x_<i) over the 784 pixels in raster order,
reported as nats/image and bits/dim (a Bernoulli per pixel; without binarization, a 256-way categorical).

Command:   python -m pretrain.main --config configs/pixelcnn_mnist.py[:cpu] --workdir runs/pixelcnn
Hardware:  default: 64 channels, 7 residual blocks, 20,000 steps, one accelerator (not run here); :cpu:
           width 32, 3 blocks, 300 steps of 32, 3m40s on the shared 2-core CPU.
Expected:  PixelCNN/MADE-class models reach about 81-86 nats/image on binarized MNIST (van den Oord et al.
           2016: 81.3 for PixelCNN, trained on 60,000 images); :cpu measured 101.2 nats/image, 0.186 bits/dim
           (95.8 after 1,500 steps; REPRODUCTIONS.md).
Data:      the 10,000 MNIST test images in ../shared/data/mnist (resolved from the repository root), split
           train:8000 / finetune:1000 / test:1000 by data.split_seed=0; train on `train` (labels unused),
           evaluate on `test`. Binarized stochastically as in the literature's figures (pixel = 1 with
           probability level/255: a fresh sample per training step, one fixed sample per test image);
           data.preprocess=('binarize',) thresholds at 128 instead, an easier, not comparable, dataset.
"""
import os

from configs import base

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def get_config(variant=None):
  c = base.get_config()
  c.objective = "pixels"
  c.model.family = "pixelcnn"
  c.model.width = 64
  c.model.num_layers = 7
  c.data.name = "idx"
  c.data.path = os.path.join(SHARED_DATA, "mnist")
  c.data.splits = ("train:8000", "finetune:1000", "test:1000")
  c.data.split_seed = 0
  c.data.train_split = "train"
  c.data.val_split = "test"
  c.data.preprocess = ("sample_binarize",)
  c.optim.lr = 1e-3
  c.optim.min_lr = 1e-4
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.0
  c.train.batch_size = 32
  c.train.steps = 20000
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.eval.batch_size = 200
  if variant == "cpu":
    c.model.width = 32
    c.model.num_layers = 3
    c.optim.warmup_steps = 20
    c.train.steps = 300
    c.train.steps_per_call = 1  # XLA:CPU runs convolutions ~7x slower inside lax.scan (measured here).
    c.train.log_every = 50
    c.train.eval_every = 150
    c.train.checkpoint_every = 150
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/pixelcnn_mnist.py or :cpu")
  return c
