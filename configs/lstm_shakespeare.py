"""A char-level LSTM language model on tiny shakespeare, char-rnn's default network: 2 LSTM layers of 128,
unrolled 50 characters, batches of 50, gradient clipping at 5.

Command:   python -m pretrain.main --config configs/lstm_shakespeare.py[:cpu] --workdir runs/lstm
Hardware:  default: 20,000 steps (about 50 epochs of char-rnn's batches), one accelerator or a long CPU run;
           :cpu: 1,000 steps (2.4 epochs), 44 s on the idle 2-core CPU.
Expected:  :cpu: measured val loss 1.915 nats/char (REPRODUCTIONS.md). Differences from char-rnn: Adam instead of
           RMSprop, random windows with a zero initial state instead of consecutive batches carrying it.
Data:      ../shared/data/tinyshakespeare/input.txt (resolved from the repository root); like char-rnn,
           the first 95% of the characters train and the last 5% validate.
"""
import os

from configs import base

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def get_config(variant=None):
  c = base.get_config()
  c.objective = "next_token"
  c.model.family = "lstm"
  c.model.num_layers = 2
  c.model.width = 128  # char-rnn's rnn_size.
  c.model.context = 50  # char-rnn's seq_length.
  c.model.dropout = 0.0
  c.data.name = "text"
  c.data.path = os.path.join(SHARED_DATA, "tinyshakespeare", "input.txt")
  c.data.tokenizer = "char"
  c.data.val_fraction = 0.05
  c.optim.lr = 2e-3  # char-rnn's learning rate.
  c.optim.min_lr = 2e-4
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 5.0
  c.train.batch_size = 50
  c.train.steps = 20000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.batches = 50
  if variant == "cpu":
    c.train.steps = 1000
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.steps_per_call = 10
  elif variant:
    raise KeyError(f"unknown variant {variant!r}; use configs/lstm_shakespeare.py or :cpu")
  return c
