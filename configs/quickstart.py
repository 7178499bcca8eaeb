"""A small GPT on the embedded Markov dataset: the two-minute first run.

Command:   python -m pretrain.main --config configs/quickstart.py --workdir runs/quickstart
Hardware:  2-core CPU, about a minute and a half of training (one process, no accelerator).
Expected:  validation 1.108 bits/token after 600 steps, against the sources' exact entropy rate of 0.995
           bits/token (+11%) and the best possible model's 1.021 (+8.5%); 3000 steps bring it to 1.037
           (REPRODUCTIONS.md).
"""
from configs import base


def get_config(variant=None):
  c = base.get_config()
  c.data.name = "markov"
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.width = 64
  c.model.context = 128
  c.model.dropout = 0.0
  c.optim.lr = 3e-3
  c.optim.min_lr = 3e-4
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.1
  c.train.steps = 600
  c.train.batch_size = 32
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 50  # Cheap at this size: an interrupted quickstart loses seconds.
  if variant == "tiny":  # Seconds, for tests.
    base.seconds_long(c, steps=20, batch_size=8, log_every=5, eval_every=10, markov_seq_len=32)
    c.model.context = 32
    c.model.num_layers = 1
    c.model.width = 32
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/quickstart.py or configs/quickstart.py:tiny")
  return c
