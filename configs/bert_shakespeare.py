"""A char-level BERT-style encoder pretrained with the masked-LM objective on tiny shakespeare (15% of the
characters selected; 80% shown as [MASK], 10% as a random character, 10% unchanged).

Command:   python -m pretrain.main --config configs/bert_shakespeare.py[:cpu] --workdir runs/bert
           python -m pretrain.main --config configs/bert_shakespeare.py:finetune --config.init.workdir=runs/bert \
             --workdir runs/bert_plays   (--config.init.mode=scratch: the same encoder from random init)
Hardware:  default: 4 layers of width 256, 5,000 steps, one accelerator (not run here); :cpu: 2 layers of
           width 128, 1,000 steps of 32 x 64 characters, 57 s on the idle 2-core CPU.
Expected:  :cpu: measured masked-character loss 2.265 nats per selected character, against 3.35 for the
           characters' unigram frequencies. :finetune from that run: accuracy 0.17-0.19 (chance 0.125): at
           this scale the plays are barely told apart (REPRODUCTIONS.md).
Data:      ../shared/data/tinyshakespeare/input.txt (resolved from the repository root); the first 90%
           trains, the last 10% validates. :finetune cuts the text into 8 equal parts (data.text_segments)
           and classifies windows of model.context + 1 characters by part, from 200 labeled windows per part;
           the last 10% of each part's windows validate.
"""
import os

from configs import base

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def get_config(variant=None):
  c = base.get_config()
  c.objective = "masked_lm"
  c.model.family = "bert"
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 256
  c.model.context = 128
  c.model.bias = True
  c.model.dropout = 0.1
  c.data.name = "text"
  c.data.path = os.path.join(SHARED_DATA, "tinyshakespeare", "input.txt")
  c.data.tokenizer = "char"
  c.optim.lr = 1e-3
  c.optim.min_lr = 1e-4
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 0.01
  c.train.batch_size = 64
  c.train.steps = 5000
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.batches = 50
  if variant == "cpu":
    c.model.num_layers = 2
    c.model.width = 128
    c.model.context = 64
    c.model.dropout = 0.0
    c.optim.warmup_steps = 50
    c.train.batch_size = 32
    c.train.steps = 1000
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.steps_per_call = 10
    c.eval.batches = 20
  elif variant == "finetune":  # Sequence classification: which eighth of the text (which play) a window is from.
    c.objective = "classification"
    c.init.mode = "full"  # Needs --config.init.workdir; the architecture comes from that run's config.json.
    c.data.text_segments = 8
    c.data.labels_per_class = 200
    c.model.head.pooling = "mean"
    c.model.dropout = 0.0
    c.optim.lr = 5e-4
    c.optim.min_lr = 5e-5
    c.optim.warmup_steps = 20
    c.train.batch_size = 32
    c.train.steps = 400
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.train.steps_per_call = 10
    c.eval.batch_size = 250
    c.eval.batches = 0
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/bert_shakespeare.py, :cpu or :finetune")
  return c
