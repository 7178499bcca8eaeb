"""The seed design's CNN (Conv 32, MaxPool, Conv 64, MaxPool, Conv 64, Dense 64, Dense 10) trained as the
design trains it: Adam, sparse softmax cross-entropy from logits (objective=classification, log p(y | x)),
accuracy reported.

Command:   python -m pretrain.main --config configs/seed_cnn_cifar10.py[:cpu] --workdir runs/seed_cnn
Hardware:  default: CIFAR-10 from the TFDS catalog (prepared in data.data_dir, or downloadable), 32x32x3,
           10 epochs of batch 32, one accelerator (not run here); :cpu: the MNIST split below, 500 steps,
           78 s on the shared 2-core CPU.
Expected:  default: test accuracy about 0.70 (the design's reference run, TensorFlow's CNN tutorial);
           :cpu: measured val accuracy 0.966 on the 1,000 held-out MNIST test images (REPRODUCTIONS.md).
Data (:cpu): the 10,000 real MNIST test images in ../shared/data/mnist (resolved from the repository root),
           split by one seeded permutation (data.split_seed=0) into train:8000 / finetune:1000 / test:1000;
           this run trains on `train` (with its labels) and evaluates on `test`.
"""
import os

from configs import base

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def design_adam(c):
  """Adam as the design has it: constant learning rate 1e-3, no weight decay, no clipping, no warmup."""
  c.optim.lr = 1e-3
  c.optim.min_lr = 1e-3
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 0.0
  c.optim.beta2 = 0.999
  c.optim.eps = 1e-7


def get_config(variant=None):
  c = base.get_config()
  c.objective = "classification"  # The Dense 10 logits layer is the classification head on the features.
  c.model.family = "seed_cnn"
  c.data.name = "cifar10"
  c.data.train_split = "train"
  c.data.val_split = "test"
  c.data.preprocess = ("scale",)
  design_adam(c)
  c.train.batch_size = 32
  c.train.steps = 15630  # 10 epochs of the 50,000 training images (1,563 batches each).
  c.train.log_every = 130
  c.train.eval_every = 1563
  c.train.checkpoint_every = 1563
  c.eval.batch_size = 500
  if variant == "cpu":
    c.data.name = "idx"
    c.data.path = os.path.join(SHARED_DATA, "mnist")
    c.data.splits = ("train:8000", "finetune:1000", "test:1000")
    c.data.split_seed = 0
    c.train.steps = 500  # 2 epochs of the 8,000 training images.
    c.train.steps_per_call = 1  # XLA:CPU runs convolutions ~7x slower inside lax.scan (measured here).
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/seed_cnn_cifar10.py or :cpu")
  return c
