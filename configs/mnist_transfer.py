"""Supervised pretraining as a source task, then transfer: the seed CNN learns log p(y | x) on MNIST digits
0-4, then a new head (and the whole network) learns digits 5-9 from a few labels per class, against the
same network from random init.

Commands:  python -m pretrain.main --config configs/mnist_transfer.py:pretrain --workdir runs/mnist_04
           python -m pretrain.main --config configs/mnist_transfer.py:finetune --config.init.workdir=runs/mnist_04 \
             --config.data.labels_per_class=10 --workdir runs/mnist_59_l10
           (add --config.init.mode=scratch for the baseline, or =linear_probe to train the head only)
Hardware:  2-core CPU (shared): 1m07s for the pretraining (accuracy 0.981 on the test digits 0-4), under a
           minute per fine-tuning run (seconds each inside launch.finetune_sweep, which caches compilation).
Expected:  measured (REPRODUCTIONS.md, 3 seeds): full fine-tuning beats scratch at 20 and 50 labels per class
           (0.908 vs 0.892, 0.945 vs 0.929) but not at 5 (0.794 vs 0.847).
Data:      the 10,000 MNIST test images in ../shared/data/mnist (resolved from the repository root), split
           train:8000 / finetune:1000 / test:1000 by data.split_seed=0. Pretraining reads the digits 0-4 of
           `train` (about 4,000); fine-tuning reads data.labels_per_class images of each digit 5-9 from
           `finetune` (chosen by seed); both evaluate on their digits of `test` (about 500 each).
"""
import os

from configs import base, seed_cnn_cifar10

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def get_config(variant=None):
  c = base.get_config()
  c.objective = "classification"
  c.model.family = "seed_cnn"
  c.data.name = "idx"
  c.data.path = os.path.join(SHARED_DATA, "mnist")
  c.data.splits = ("train:8000", "finetune:1000", "test:1000")
  c.data.split_seed = 0
  c.data.val_split = "test"
  c.data.preprocess = ("scale",)
  seed_cnn_cifar10.design_adam(c)  # Adam, as the seed CNN is trained.
  c.train.batch_size = 32
  c.eval.batch_size = 250
  if variant in (None, "pretrain"):
    c.data.classes = (0, 1, 2, 3, 4)
    c.data.train_split = "train"
    c.train.steps = 400  # About 3 epochs of the ~4,000 training images of digits 0-4.
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
  elif variant == "finetune":
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.train_split = "finetune"
    c.data.labels_per_class = 10
    c.init.mode = "full"  # Needs --config.init.workdir: the pretraining run.
    c.init.dont_load = ("^head/",)  # New classes: the head starts afresh although its shape matches.
    c.train.batch_size = 25
    c.train.steps = 150
    c.train.log_every = 50
    c.train.eval_every = 150
    c.train.checkpoint_every = 150
  else:
    raise KeyError(f"unknown variant {variant!r}; use configs/mnist_transfer.py:pretrain or :finetune")
  return c
