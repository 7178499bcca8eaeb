"""CIFAR-style ResNets: ResNet-20 (default) or ResNet-18 widths, trained on log p(y | x) with BatchNorm
statistics carried in the train state (and averaged over devices under pmap).

Command:   python -m pretrain.main --config configs/resnet_cifar10.py[:resnet18|:cpu] --workdir runs/resnet
Hardware:  default and :resnet18: CIFAR-10 from the TFDS catalog (prepared in data.data_dir, or
           downloadable), one accelerator; :cpu: ResNet-20 on the MNIST split below, 200 steps of 32,
           174 s on the shared 2-core CPU.
Expected:  ResNet-20 with the standard augmentation reaches 91.25% test accuracy in He et al. (2016) with
           SGD for 64k steps; this config uses AdamW with a cosine schedule and has not been run to the end
           here (no accelerator). :cpu: measured val accuracy 0.789 after its 200 steps (REPRODUCTIONS.md).
Data (:cpu): ../shared/data/mnist (resolved from the repository root), split train:8000 / finetune:1000 /
           test:1000 by data.split_seed=0; it trains on `train` and evaluates on `test`.
"""
import os

from configs import base

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def get_config(variant=None):
  c = base.get_config()
  c.objective = "classification"
  c.model.family = "resnet"
  c.model.stage_sizes = (3, 3, 3)  # ResNet-20: 6n+2 layers with n=3.
  c.model.stage_widths = (16, 32, 64)
  c.data.name = "cifar10"
  c.data.train_split = "train"
  c.data.val_split = "test"
  c.data.preprocess = ("pad:4", "random_crop:32", "random_flip", "scale")  # He et al.'s augmentation.
  c.optim.lr = 2e-3
  c.optim.min_lr = 2e-5
  c.optim.warmup_steps = 500
  c.optim.weight_decay = 5e-2
  c.optim.grad_clip = 0.0
  c.train.batch_size = 128
  c.train.steps = 64000
  c.train.log_every = 200
  c.train.eval_every = 4000
  c.train.checkpoint_every = 4000
  c.eval.batch_size = 500
  if variant == "resnet18":
    c.model.stage_sizes = (2, 2, 2, 2)
    c.model.stage_widths = (64, 128, 256, 512)
  elif variant == "cpu":
    c.data.name = "idx"
    c.data.path = os.path.join(SHARED_DATA, "mnist")
    c.data.preprocess = ("scale",)
    c.optim.warmup_steps = 20
    c.train.batch_size = 32
    c.train.steps = 200
    c.train.steps_per_call = 1  # XLA:CPU runs convolutions ~7x slower inside lax.scan (measured here).
    c.train.log_every = 20
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/resnet_cifar10.py, :resnet18 or :cpu")
  return c
