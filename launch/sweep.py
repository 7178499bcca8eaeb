"""Ablation sweeps: a grid of config overrides, one workdir per run, run here or as a SLURM array.

  python -m launch.sweep --config configs/NAME.py[:VARIANT] --sweep model.num_layers=2,4,8 \\
      --sweep optim.lr=1e-3,3e-4 [--zip KEY=V1,V2 --zip KEY2=W1,W2] --seeds 3 --root DIR \\
      [--parallel N] [--slurm FILE] [--target LOSS] [--config.a.b=value ...]

- The grid is the product of the --sweep axes; all --zip axes move together (equal lengths) as one more
  axis. Every setting runs --seeds times, with --config.seed=0..SEEDS-1. Plain --config.a.b=value
  overrides apply to every run.
- Each run is `python -m pretrain.main --config SPEC --workdir DIR/NAME --config.KEY=VALUE ...` in its own
  process, so a crash cannot take the sweep down. NAME spells the swept values, e.g.
  `num_layers=2_lr=1e-3_seed=0`; the run's output is appended to DIR/NAME/log.txt.
- Rerunning the same sweep skips runs whose run.json says finished with the same overrides and train.steps,
  and reruns the others, which resume from their newest checkpoint.
- A failing run does not stop the others: failures are listed with their error line at the end, the
  exit status is then 1.
- When the runs end, DIR/report.md (with report.csv and PNG plots, see pretrain.report) summarises the
  sweep's finished runs.
- --slurm FILE writes an sbatch array script, one task per unfinished run, instead of running anything.
"""
import dataclasses
import itertools
import os
import re
import shlex
import subprocess
import sys
import time

from absl import flags

from pretrain import cli, configlib
from pretrain.trainer import ledger, metrics
from pretrain.errors import ConfigError

flags.DEFINE_string("config", None, "Config file, optionally with a variant: configs/NAME.py[:VARIANT].")
flags.DEFINE_multi_string("sweep", [], "KEY=V1,V2,...: one axis of the grid (the grid is the product of the axes).")
flags.DEFINE_multi_string("zip", [], "KEY=V1,V2,...: axes that move together (equal lengths) as one grid axis.")
flags.DEFINE_integer("seeds", 1, "Runs per setting, with --config.seed=0..SEEDS-1.")
flags.DEFINE_string("root", None, "Sweep folder: one workdir per run, and report.md when the runs end.")
flags.DEFINE_integer("parallel", 1, "Runs at once on this machine; with --slurm, N > 1 caps the running array tasks.")
flags.DEFINE_string("slurm", None, "Write an sbatch array script (one task per unfinished run) to this file instead "
                    "of running.")
flags.DEFINE_multi_string("sbatch", [], "Extra `#SBATCH` option for --slurm, e.g. --sbatch=--gres=gpu:1 (repeatable).")
flags.DEFINE_float("target", None, "A val loss: the report adds the steps and training seconds each setting took to reach it.")
FLAGS = flags.FLAGS


@dataclasses.dataclass
class Run:
  name: str  # Swept values and seed, readable: num_layers=2_lr=1e-3_seed=0.
  workdir: str
  overrides: list  # (dotted key, text) for pretrain.main: fixed ones, swept ones, then the seed.
  config: object  # The resolved ConfigDict, to tell a finished run from one trained with other settings.


def parse_axis(spec: str, flag: str) -> tuple[str, list[str]]:
  key, eq, text = spec.partition("=")
  values = [v.strip() for v in text.split(",") if v.strip()]
  if not eq or not key.strip() or not values:
    raise ConfigError(f"--{flag} {spec!r}: expected KEY=V1,V2,... e.g. --{flag} model.num_layers=2,4,8")
  return key.strip().removeprefix("config."), values


def expand(config_spec: str, sweeps=(), zips=(), seeds: int = 1, root: str = ".", fixed=()) -> list[Run]:
  """The grid as runs, each with its resolved config: a bad key or value stops the sweep before any run."""
  axes = [parse_axis(s, "sweep") for s in sweeps]
  zipped = [parse_axis(s, "zip") for s in zips]
  keys = [key for key, _ in axes + zipped]
  fixed_keys = {key for key, _ in fixed}
  for key in keys:
    if key == "seed":
      raise ConfigError("seeds are swept by --seeds N (seed 0..N-1), not by --sweep/--zip seed=...")
    if keys.count(key) > 1:
      raise ConfigError(f"{key} is swept twice; give each key one --sweep or --zip")
    if key in fixed_keys:
      raise ConfigError(f"{key} is both swept and set by --config.{key}; drop one of them")
  if seeds < 1:
    raise ConfigError(f"--seeds={seeds} must be at least 1")
  choices = [[{key: v} for v in values] for key, values in axes]
  if zipped:
    lengths = {key: len(values) for key, values in zipped}
    if len(set(lengths.values())) > 1:
      raise ConfigError(f"--zip axes move together and need equal lengths; got {lengths}")
    choices.append([dict(zip(lengths, row)) for row in zip(*(values for _, values in zipped))])
  short = _short_names(keys)
  runs = []
  for combo in itertools.product(*choices):
    settings = {key: value for choice in combo for key, value in choice.items()}
    for seed in range(seeds):
      name = "_".join([*(f"{short[k]}={_clean(v)}" for k, v in settings.items()), f"seed={seed}"])
      overrides = [*fixed, *settings.items(), ("seed", str(seed))]
      runs.append(Run(name, os.path.join(root, name), overrides, configlib.load(config_spec, overrides)))
  names = [run.name for run in runs]
  for name in names:
    if names.count(name) > 1:
      raise ConfigError(f"two runs would share the workdir {name!r}; remove the repeated value from the sweep")
  return runs


def _short_names(keys: list[str]) -> dict:
  """The last part of each key (num_layers for model.num_layers), the whole key where that is ambiguous."""
  last = [key.rpartition(".")[2] for key in keys]
  return {key: tail if last.count(tail) == 1 else key for key, tail in zip(keys, last)}


def _clean(value: str) -> str:
  return re.sub(r"[^A-Za-z0-9.+\-]", "-", value)


def is_finished(run: Run) -> bool:
  """Finished: run.json says so and holds this run's overrides and train.steps (training may fill in other
  fields, e.g. a resolved init.mode); without a run.json, a val line at train.steps."""
  record = ledger.read(run.workdir)
  if record is not None:
    saved = configlib.flatten(record.get("config") or {})
    wanted = configlib.flatten(ledger.resolved_config(run.config))
    keys = [key for key, _ in run.overrides] + ["train.steps"]
    return record.get("status") == "finished" and all(saved.get(key) == wanted.get(key) for key in keys)
  return any(row.get("split") == "val" and row.get("step", 0) >= run.config.train.steps
             for row in metrics.read(run.workdir))


def command(config_spec: str, run: Run) -> list[str]:
  return [sys.executable, "-m", "pretrain.main", "--config", config_spec, "--workdir", run.workdir,
          *(f"--config.{key}={value}" for key, value in run.overrides)]


def run_local(config_spec: str, runs: list[Run], parallel: int) -> list[tuple[Run, str]]:
  """Runs `parallel` processes at a time; returns (run, error line) for each run that did not finish."""
  waiting, active, failures = list(enumerate(runs, 1)), [], []
  try:
    while waiting or active:
      while waiting and len(active) < parallel:
        index, run = waiting.pop(0)
        os.makedirs(run.workdir, exist_ok=True)
        log_path = os.path.join(run.workdir, "log.txt")
        with open(log_path, "a") as log:
          log.write(f"$ {shlex.join(command(config_spec, run))}\n")
          log.flush()
          offset = log.tell()
          proc = subprocess.Popen(command(config_spec, run), stdout=log, stderr=subprocess.STDOUT)
        active.append((proc, index, run, time.time(), log_path, offset))
        print(f"[{index}/{len(runs)}] {run.name}: started (log: {log_path})", flush=True)
      time.sleep(0.2)
      for item in [item for item in active if item[0].poll() is not None]:
        active.remove(item)
        proc, index, run, started, log_path, offset = item
        took = metrics.format_duration(time.time() - started)
        if proc.returncode == 0 and is_finished(run):
          val = (ledger.read(run.workdir) or {}).get("final_metrics", {}).get("val") or {}
          loss = f", val loss {val['loss']:.4f}" if "loss" in val else ""
          print(f"[{index}/{len(runs)}] {run.name}: finished in {took}{loss}", flush=True)
        else:
          error = _error_line(log_path, offset, proc.returncode, run)
          failures.append((run, error))
          print(f"[{index}/{len(runs)}] {run.name}: FAILED after {took}: {error}", flush=True)
  except KeyboardInterrupt:
    for proc, *_ in active:  # Stopped runs resume from their checkpoints when the sweep is rerun.
      proc.terminate()
      proc.wait()
    raise
  return failures


def _error_line(log_path: str, offset: int, returncode: int, run: Run) -> str:
  """The run's `error:` line, else the last line it printed (a traceback's last line), else its exit."""
  with open(log_path, errors="replace") as f:
    f.seek(offset)
    lines = [line.strip() for line in f if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  if returncode == 0:
    record = ledger.read(run.workdir) or {}
    return f"stopped at step {record.get('step', '?')} of {run.config.train.steps}; rerun the sweep to resume"
  if returncode < 0:
    return f"killed by signal {-returncode}"
  return (errors or lines or [f"exit status {returncode}"])[-1][:400]


def slurm_script(config_spec: str, runs: list[Run], *, root: str, parallel: int, options=()) -> str:
  """An sbatch array script with one task per run; each task runs the same command as a local sweep."""
  root = os.path.abspath(root)
  lines = ["#!/bin/bash",
           f"#SBATCH --job-name=sweep-{_clean(os.path.basename(root))}",
           f"#SBATCH --array=0-{len(runs) - 1}" + (f"%{parallel}" if parallel > 1 else ""),
           f"#SBATCH --output={root}/slurm-%A_%a.out",
           *(f"#SBATCH {option}" for option in options),
           f"# {len(runs)} runs of {config_spec}; a task that ran before resumes from its checkpoints.",
           f"# When all tasks have ended: python -m pretrain.report {shlex.quote(root)}",
           "set -euo pipefail",
           f"cd {shlex.quote(os.getcwd())}",
           'case "$SLURM_ARRAY_TASK_ID" in']
  for i, run in enumerate(runs):
    lines.append(f"  {i}) exec {shlex.join(command(config_spec, run))} ;;")
  lines += ['  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac", ""]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; sweep axes take --sweep KEY=V1,V2")
  if FLAGS.parallel < 1:
    raise ConfigError(f"--parallel={FLAGS.parallel} must be at least 1")
  runs = expand(FLAGS.config, FLAGS.sweep, FLAGS.zip, FLAGS.seeds, FLAGS.root, fixed=list(cli.OVERRIDES))
  todo = [run for run in runs if not is_finished(run)]
  print(f"sweep: {len(runs)} runs under {FLAGS.root}; {len(runs) - len(todo)} already finished, {len(todo)} to run",
        flush=True)
  if FLAGS.slurm:
    if not todo:
      print("sweep: every run has finished; nothing to submit")
      return
    os.makedirs(FLAGS.root, exist_ok=True)
    with open(FLAGS.slurm, "w") as f:
      f.write(slurm_script(FLAGS.config, todo, root=FLAGS.root, parallel=FLAGS.parallel, options=FLAGS.sbatch))
    print(f"sweep: wrote {FLAGS.slurm} ({len(todo)} array tasks); submit it with `sbatch {FLAGS.slurm}`, then "
          f"build the report with `python -m pretrain.report {FLAGS.root}`")
    return
  started = time.time()
  failures = run_local(FLAGS.config, todo, FLAGS.parallel)
  if todo:
    print(f"sweep: {len(todo) - len(failures)} of {len(todo)} runs finished in "
          f"{metrics.format_duration(time.time() - started)}", flush=True)
  finished = [run.workdir for run in runs if is_finished(run)]
  if finished:
    from pretrain import report  # Imported here: matplotlib is needed only now.
    keys = [parse_axis(spec, "sweep")[0] for spec in FLAGS.sweep + FLAGS.zip]
    path = report.write(FLAGS.root, finished, keys=keys, command=ledger.command_line(),
                        failures=[(run.name, error) for run, error in failures], target=FLAGS.target)
    print(f"sweep: report in {path}")
  if failures:
    print(f"sweep: {len(failures)} run(s) failed:", file=sys.stderr)
    for run, error in failures:
      print(f"  {run.name}: {error} (log: {os.path.join(run.workdir, 'log.txt')})", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main, required=("config", "root"))
