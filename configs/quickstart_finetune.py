"""Fine-tune the quickstart GPT to tell which Markov source emitted a 16-token sequence, from 8 labels per class.

Command:   python -m pretrain.main --config configs/quickstart_finetune.py \
             --config.init.workdir=runs/quickstart --workdir runs/sources_full
           (--config.init.mode=scratch: the same architecture from random init; =linear_probe: head only)
Hardware:  2-core CPU, 40-55 s per run as measured on a busy machine (most of it start-up and compilation),
           after configs/quickstart.py has pretrained runs/quickstart.
Expected:  seed 0: val accuracy 0.865 fine-tuned, 0.842 linear probe, 0.745 from scratch; over seeds 0-2
           0.881 ± 0.013, 0.886 ± 0.039 and 0.771 ± 0.032 (REPRODUCTIONS.md, launch/finetune_sweep.py).
"""
from configs import base


def get_config(variant=None):
  c = base.get_config()
  c.objective = "classification"
  c.init.mode = "full"  # Needs --config.init.workdir; the architecture comes from that run's config.json.
  c.data.name = "markov"  # The quickstart's sources (same seed); labels are the source ids.
  # Short snippets: on the pretraining data's 128-token sequences every mode, scratch included, is near 100%.
  c.data.markov.seq_len = 16
  c.data.markov.num_train = 2048  # The labeled pool; data.labels_per_class of each class are kept.
  c.data.markov.num_val = 1024
  c.data.labels_per_class = 8
  c.model.head.pooling = "mean"
  c.optim.lr = 1e-3
  c.optim.lr_multipliers = ("^head/=10",)  # The new head learns faster than the network under it.
  c.optim.min_lr = 1e-4
  c.optim.warmup_steps = 10
  c.optim.weight_decay = 0.1
  c.train.steps = 100
  c.train.batch_size = 32
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.eval.batch_size = 256
  if variant == "tiny":  # Seconds, for tests; fine-tunes a configs/quickstart.py:tiny run.
    base.seconds_long(c, steps=10, batch_size=8, log_every=5, eval_every=5, markov_seq_len=16)
    c.data.labels_per_class = 4
    c.eval.batch_size = 32
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/quickstart_finetune.py or configs/quickstart_finetune.py:tiny")
  return c
