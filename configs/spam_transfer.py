"""ULMFiT's claim on real e-mails: a byte-level language model pretrained on the SpamAssassin e-mails' text, then
fine-tuned to tell ham from spam, against the same network trained from scratch on more labels.

Commands (REPRODUCTIONS.md, "Transfer on real e-mails"):
  python -m launch.emails --src ../shared/data/spamassassin --out runs/emails   # 4,837 train / 1,209 val e-mails
  python -m launch.finetune_sweep --pretrain_config configs/spam_transfer.py:gpt --pretrained runs/spam_gpt \
      --config configs/spam_transfer.py:finetune --root runs/spam_gpt_ft --budgets 4,16,64,256,all --seeds 3
  (:lstm / runs/spam_lstm for the LSTM.) Pretraining reads train.jsonl's text only (labels unused) and validates
  on val.jsonl; fine-tuning keeps data.labels_per_class e-mails of each class of train.jsonl ("all": every one)
  and is scored on the whole of val.jsonl (31% spam: accuracy and macro-F1).
Hardware:  the 2-core CPU as two XLA devices (pmap); pretraining each network ~12 minutes, each fine-tuning run
           ~30 s in the sweep's process (compiled programs cached).
Expected:  REPRODUCTIONS.md has the measured table and plot.
Variants:  gpt / lstm (pretraining), finetune (fine-tuning either; the architecture comes from the pretrained run).
"""
from configs import base

EMAILS = "runs/emails"  # Where launch.emails wrote train.jsonl and val.jsonl (relative to the repository root).


def _data(c):
  c.data.name = "text"
  c.data.path = f"{EMAILS}/train.jsonl"
  c.data.val_path = f"{EMAILS}/val.jsonl"
  c.data.tokenizer = "byte"  # Any e-mail as it is; no vocabulary to fit.
  c.model.context = 256  # The first 256 bytes of each e-mail: the subject and the start of the body.
  c.model.dtype = "bfloat16"
  c.parallel.strategy = "pmap"
  c.parallel.cpu_devices = 2  # Both cores as XLA devices.
  c.train.steps_per_call = 10


def get_config(variant=None):
  c = base.get_config()
  _data(c)
  if variant in ("gpt", "lstm"):
    if variant == "gpt":
      c.model.num_layers, c.model.width, c.model.num_heads = 4, 128, 4
      c.model.position = "rope"
    else:
      c.model.family = "lstm"
      c.model.num_layers, c.model.width = 1, 256
      c.optim.grad_clip = 5.0
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-3, 1e-4, 100
    c.train.batch_size = 16
    c.train.steps = 2000
    c.train.log_every = 100
    c.train.eval_every = c.train.checkpoint_every = 1000
    c.eval.batches = 40  # 40 x 16 windows spread over val.jsonl's text.
  elif variant == "finetune":
    c.objective = "classification"
    c.data.label_field = "label"
    c.data.labels_per_class = 16  # The sweep sets it per run (0: all).
    c.init.mode = "full"  # Needs --config.init.workdir (the sweep passes --pretrained).
    c.model.head.pooling = "mean"  # Over the e-mail's real bytes.
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-3, 1e-4, 10
    c.optim.lr_multipliers = ("^head/=10",)  # The new head learns faster than the network under it.
    c.train.batch_size = 16
    c.train.steps = 100
    c.train.log_every = c.train.eval_every = c.train.checkpoint_every = 100
    c.eval.batch_size = 128
    c.eval.batches = 0  # The whole of val.jsonl.
  else:
    raise KeyError(f"unknown variant {variant!r}; use configs/spam_transfer.py:gpt, :lstm or :finetune")
  return c
