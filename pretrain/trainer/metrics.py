"""Where numbers go: DIR/metrics.jsonl (one JSON line per log or eval), TensorBoard events, the console, and
Weights & Biases when log.wandb_project is set."""
import json
import math
import os
import sys
import tempfile
import time
import uuid

import numpy as np

from pretrain import configlib, storage
from pretrain.trainer import layout
from pretrain.errors import ConfigError, PretrainError


def summarize_eval(per_batch: list[dict]) -> dict:
  """Host-side division of the eval sums: mean nats/token, bits/token, perplexity and the standard
  error of the mean over eval batches; sums with a shape are added over batches for the objective's summarize."""
  loss_sum = sum(float(b["loss_sum"]) for b in per_batch)
  count = sum(float(b["count"]) for b in per_batch)
  loss = loss_sum / max(count, 1.0)
  means = np.array([float(b["loss_sum"]) / float(b["count"]) for b in per_batch if float(b["count"]) > 0])
  sem = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else 0.0
  perplexity = math.exp(min(loss, 700))
  out = {"loss": loss, "loss_sem": sem, "bits_per_token": loss / math.log(2), "bits_per_token_sem": sem / math.log(2),
         "perplexity": perplexity, "perplexity_sem": perplexity * sem,  # Delta method: d exp(x) = exp(x) dx.
         "count": count}
  for key, value in per_batch[0].items():  # Sums with a shape (a confusion matrix) are added as they are.
    if np.ndim(value) >= 1:
      out[key] = np.sum([np.asarray(b[key]) for b in per_batch], axis=0)
  if "bytes" in per_batch[0]:  # Text: nats over ln 2 over the UTF-8 bytes the scored tokens cover.
    total_bytes = sum(float(b["bytes"]) for b in per_batch)
    per_byte = np.array([float(b["loss_sum"]) / float(b["bytes"]) for b in per_batch if float(b["bytes"]) > 0])
    out["bits_per_byte"] = loss_sum / max(total_bytes, 1.0) / math.log(2)
    out["bits_per_byte_sem"] = (float(per_byte.std(ddof=1) / math.sqrt(len(per_byte))) / math.log(2)
                                if len(per_byte) > 1 else 0.0)
    out["bytes"] = total_bytes
  if "correct" in per_batch[0]:
    out["accuracy"] = sum(float(b["correct"]) for b in per_batch) / max(count, 1.0)
  if "images" in per_batch[0]:  # Image likelihoods: count is sub-pixels, so bits/token is bits/dim.
    out["bits_per_dim"] = out["bits_per_token"]
    out["nats_per_image"] = loss_sum / max(sum(float(b["images"]) for b in per_batch), 1.0)
  return out


# Dense bf16 peaks in TFLOP/s per chip, by the start of jax's device_kind (lowercase); the first match wins.
PEAK_TFLOPS = (("nvidia h100", 989.0), ("nvidia h200", 989.0), ("nvidia gh200", 989.0), ("nvidia a100", 312.0),
               ("tpu v4", 275.0), ("tpu v5 lite", 197.0), ("tpu v5e", 197.0), ("tpu v5p", 459.0), ("tpu v5", 459.0),
               ("tpu v6 lite", 918.0), ("tpu v6e", 918.0), ("tpu7x", 2307.0))


def peak_flops(device_kind: str, override_tflops: float = 0.0) -> float | None:
  """A chip's dense bf16 peak in FLOP/s (log.peak_flops, in TFLOP/s, when set); None where unknown (CPUs)."""
  if override_tflops:
    return override_tflops * 1e12
  kind = device_kind.lower()
  return next((tflops * 1e12 for prefix, tflops in PEAK_TFLOPS if kind.startswith(prefix)), None)


def describe_eval(out: dict) -> str:
  """The console's summary of an evaluation's fields beyond the loss: next_token's reference scores, e.g.
  ' | entropy 0.9950 (+0.0418) | best 1.0211 (+0.0157)'; classification's accuracy, F1 per label name and the
  confusion matrix where the row has one."""
  parts = [(f" | {name} {out[reference]:.4f} (+{out[gap]:.4f})") for name, reference, gap in (
      ("entropy", "entropy_bits_per_token", "bits_above_entropy"), ("best", "best_bits_per_token", "bits_above_best"))
      if reference in out]
  if "accuracy" in out:
    parts.append(f" | accuracy {out['accuracy']:.4f}")
  if "macro_f1" in out:
    per_class = [f"{k[3:]} {v:.3f}" for k, v in out.items() if k.startswith("f1/")]
    parts.append(f" | macro-F1 {out['macro_f1']:.4f}" + (f" ({', '.join(per_class)})" if len(per_class) <= 10 else ""))
  if "confusion" in out:
    parts.append("\n" + confusion_table(out["confusion"], out["labels"]))
  return "".join(parts)


def confusion_table(confusion, labels) -> str:
  """A confusion matrix as aligned text: a row per true label, a column per predicted one."""
  width = max(len(str(v)) for row in confusion for v in row)
  width = max(width, *(len(n) for n in labels))
  head = " " * width + " | " + " ".join(n.rjust(width) for n in labels) + "   (rows: true label, columns: predicted)"
  rows = [n.rjust(width) + " | " + " ".join(str(v).rjust(width) for v in row) for n, row in zip(labels, confusion)]
  return "\n".join([head, *rows])


def _summary_writer_class():
  """tensorboardX imports torch, when it is installed, only to accept torch tensors: 1.5 s of every start-up
  for a writer that logs floats. The import is kept out while tensorboardX loads."""
  hidden = "torch" not in sys.modules
  if hidden:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles.
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hidden:
      del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """metrics.jsonl and TensorBoard events. Only the writing process (process 0) writes; the others call it
  as a no-op. On an object store, which cannot append, the file is written whole: at most every
  FLUSH_SECONDS while rows come, and at each `flush()` (the loop calls it with every checkpoint) and
  `close()`; TensorBoard writes to a local folder whose files are copied there at the same moments."""
  FLUSH_SECONDS = 30

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.path = layout.metrics(workdir)
    self.remote = storage.is_remote(workdir)
    self._tensorboard = layout.tensorboard(workdir)
    self._lines, self._flushed = None, time.monotonic()  # Remote: the whole file, as it will be written.
    self._tb, self._wandb, self.tensorboard_local = None, None, None
    if enabled:
      SummaryWriter = _summary_writer_class()  # Imported lazily: only the writing process needs it.
      # Profiler traces go here too (pretrain/trainer/actions.py): on an object store, a local folder copied there.
      self.tensorboard_local = tempfile.mkdtemp(prefix="pretrain-tensorboard-") if self.remote else self._tensorboard
      self._tb = SummaryWriter(self.tensorboard_local, flush_secs=self.FLUSH_SECONDS)

  def start_wandb(self, config, workdir: str) -> None:
    """Logs to Weights & Biases as well, into the W&B run whose id DIR/wandb_run_id keeps (created on the first
    attempt), so a resumed or requeued run continues the same W&B run."""
    if self.enabled and config.log.wandb_project:
      self._wandb = WandB(config, workdir)

  def _read_lines(self) -> list[str]:
    return storage.read_text(self.path).splitlines(keepends=True) if storage.exists(self.path) else []

  def truncate_after(self, step: int, redo=()) -> None:
    """Drops lines past `step`, and those at `step` of the splits in `redo`: a resumed run recomputes them, so
    each step is logged once."""
    if not self.enabled or not storage.exists(self.path):
      self._lines = [] if self.remote else None
      return
    kept = []
    for line in self._read_lines():
      try:
        row = json.loads(line)
        if row.get("step", 0) < step or row.get("step", 0) == step and row.get("split") not in redo:
          kept.append(line if line.endswith("\n") else line + "\n")
      except ValueError:
        pass  # A line cut short by a kill.
    storage.write_text(self.path, "".join(kept))
    if self.remote:
      self._lines = kept

  def count_events(self, key: str, up_to: int) -> int:
    """How many lines up to `step` carry `key`: e.g. steps already skipped before a resume."""
    count = 0
    for line in self._read_lines():
      try:
        row = json.loads(line)
      except ValueError:
        continue
      count += key in row and row.get("step", 0) <= up_to
    return count

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **{k: _plain(v) for k, v in metrics.items()}}
    line = json.dumps(row) + "\n"
    if self.remote:
      if self._lines is None:
        self._lines = self._read_lines()
      self._lines.append(line)
    else:
      with open(self.path, "a") as f:
        f.write(line)
    scalars = {f"{split}/{k}": v for k, v in row.items() if k not in ("step", "split") and isinstance(v, (int, float))}
    for tag, v in scalars.items():
      self._tb.add_scalar(tag, v, step)
    if "confusion" in row:  # TensorBoard's text tab renders it as a table.
      labels = row["labels"]
      table = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
      table += [f"| {n} | " + " | ".join(map(str, r)) + " |" for n, r in zip(labels, row["confusion"])]
      self._tb.add_text(f"{split}/confusion", "\n".join(table), step)
    if self._wandb is not None:
      self._wandb.log(step, scalars)
    if self.remote and time.monotonic() - self._flushed > self.FLUSH_SECONDS:
      self.flush()

  def flush(self) -> None:
    """Everything written so far is in the workdir (locally it always is, but for TensorBoard's buffer)."""
    if self.enabled:
      self._tb.flush()
      self._upload()

  def _upload(self) -> None:
    if not self.remote:
      return
    if self._lines is not None:
      storage.write_text(self.path, "".join(self._lines))
    for folder, _, names in os.walk(self.tensorboard_local):
      relative = os.path.relpath(folder, self.tensorboard_local)
      for name in names:
        with open(os.path.join(folder, name), "rb") as f:
          target = storage.path(storage.join(self._tensorboard, *([] if relative == "." else [relative]), name))
          target.parent.mkdir(parents=True, exist_ok=True)
          target.write_bytes(f.read())
    self._flushed = time.monotonic()

  def console(self, text: str) -> None:
    if self.enabled:
      print(text, file=sys.stdout, flush=True)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._upload()
    if self._wandb is not None:
      self._wandb.close()
      self._wandb = None


class WandB:
  """One W&B run per workdir: its id is written to DIR/wandb_run_id on the first attempt and reused with
  resume="allow" by every later one. W&B's files go under $WANDB_DIR, else into the workdir (when local)."""

  def __init__(self, config, workdir: str):
    try:
      import wandb
    except ImportError:
      raise ConfigError("log.wandb_project is set but wandb is not installed; pip install -e '.[wandb]' or unset "
                        "--config.log.wandb_project") from None
    id_path = layout.wandb_run_id(workdir)
    run_id = storage.read_text(id_path).strip() if storage.exists(id_path) else uuid.uuid4().hex[:12]
    storage.write_text(id_path, run_id + "\n")
    log = config.log
    local_dir = None if os.environ.get("WANDB_DIR") or storage.is_remote(workdir) else str(workdir)
    try:
      self.run = wandb.init(project=log.wandb_project, entity=log.wandb_entity, id=run_id, resume="allow",
                            name=log.wandb_name or os.path.basename(os.path.normpath(str(workdir))),
                            tags=list(log.wandb_tags), config=json.loads(configlib.to_json(config)), dir=local_dir)
    except Exception as e:  # wandb raises its own kinds (no login, no network, bad entity).
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      raise PretrainError(f"W&B could not start ({reason}); run `wandb login`, or set WANDB_MODE=offline to log "
                          "locally and `wandb sync` later, or unset --config.log.wandb_project") from None

  def log(self, step: int, scalars: dict) -> None:
    self.run.log(scalars, step=step)

  def close(self) -> None:
    self.run.finish()


def read(workdir: str) -> list[dict]:
  """The lines of DIR/metrics.jsonl in order; [] when there is none. A line cut short by a kill is skipped."""
  path = layout.metrics(workdir)
  if not storage.exists(path):
    return []
  rows = []
  for line in storage.read_text(path).splitlines():
    try:
      rows.append(json.loads(line))
    except ValueError:
      pass
  return rows


def _plain(v):
  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  if isinstance(v, np.ndarray) and v.size == 1:
    return v.item()
  return v


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
