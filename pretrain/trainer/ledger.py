"""DIR/run.json: what a run was and how it ended, so any set of workdirs can be compared later.

It holds the resolved config, the command, the code's git commit and dirty flag, package versions and
hardware, written by process 0 when training starts (status "running"), and completed when the loop
returns: status "finished" (the last metrics line is at train.steps) or "stopped" (it returned earlier),
end time, wall seconds and the final train and val metrics lines.

Wall seconds cover model building, compilation, training, evaluation and checkpointing. A resumed run
adds its own time to that of earlier attempts that ended; an attempt that was killed leaves no end
time, so its seconds are not counted.
"""
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time

from pretrain import cli, configlib, storage
from pretrain.trainer import layout, metrics

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy")
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The repository.


def read(workdir: str) -> dict | None:
  """The run's record, or None when the workdir has none (or it cannot be parsed)."""
  try:
    return json.loads(storage.read_text(layout.ledger(workdir)))
  except (OSError, ValueError):
    return None


def resolved_config(config) -> dict:
  """The config as run.json stores it (plain JSON values), for comparing a record with a config."""
  return json.loads(configlib.to_json(config))


def start(run) -> None:
  """Records the run as started; `run` is a pretrain.trainer.train.Run."""
  if run.process_index != 0:
    return
  previous = read(run.workdir) or {}
  _write(run.workdir, {
      "status": "running",
      "command": command_line(),
      "config": resolved_config(run.config),
      "code": code_version(),
      "packages": package_versions(),
      "hardware": hardware(devices_used=run.strategy.num_devices),
      "vocabulary": run.dataset.vocabulary,
      "parameters": run.parameters,
      "attempt": previous.get("attempt", 0) + 1,
      "started": _now(),
      "started_unix": time.time(),
      "earlier_wall_s": previous.get("wall_s", previous.get("earlier_wall_s", 0.0)),
  })


def finish(run) -> None:
  """Completes the record with the status, end time, wall seconds and final metrics."""
  if run.process_index != 0:
    return
  record = read(run.workdir) or {}
  last = {row["split"]: row for row in metrics.read(run.workdir)}
  last_step = max((row["step"] for row in last.values()), default=0)
  record.update({
      "status": "finished" if last_step >= run.config.train.steps else "stopped",
      "step": last_step,
      "ended": _now(),
      "wall_s": record.get("earlier_wall_s", 0.0) + time.time() - record.get("started_unix", time.time()),
      "final_metrics": {split: last.get(split) for split in ("train", "val")},
  })
  _write(run.workdir, record)


def code_version() -> dict:
  """Git commit of the repository this package runs from and whether tracked files differ from it;
  None for both when the code is not in a git checkout (an installed wheel) or git is missing."""
  def git(*args):
    return subprocess.run(["git", "-C", CODE_ROOT, *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()
  try:
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}
  return {"commit": commit, "dirty": dirty}


def package_versions() -> dict:
  versions = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def hardware(*, devices_used: int) -> dict:
  import jax  # Here, not at the top: reading records (sweeps, reports) needs no jax.
  devices = jax.devices()
  return {
      "host": platform.node(),
      "platform": platform.platform(),
      "cpu": _cpu_model(),
      "cpu_count": os.cpu_count(),
      "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": jax.device_count(),
      "devices_used": devices_used,
      "process_count": jax.process_count(),
  }


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def command_line() -> str:
  """The command line as typed: `python -m MODULE` when run as a module, overrides included (cli.run takes
  them out of sys.argv)."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
  return shlex.join([*head, *sys.argv[1:], *(f"--config.{k}={v}" for k, v in cli.OVERRIDES)])


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write(workdir: str, record: dict) -> None:
  storage.write_text(layout.ledger(workdir), json.dumps(record, indent=2, sort_keys=True))  # Whole, or not at all.
