"""Final metrics and curves of any set of workdirs: a table with mean ± std over seeds per setting, and plots.

  python -m pretrain.report DIR... [--out DIR] [--metric val.loss] [--target 1.88]

Each DIR is a workdir of pretrain.main or a folder of them (a sweep's --root). The swept keys are the
config keys whose values differ across the workdirs, the seed excepted: runs that differ only in their
seed are one setting, and ± is the standard deviation over its seeds (ddof=1). Only finished runs (a
metrics line at train.steps) enter the table; the others are listed under it with the step they reached.

Writes OUT/report.md, OUT/report.csv (one row per setting), OUT/loss_curves.png (train and val loss of
every run, one colour per setting) and OUT/<metric>_vs_<key>.png for each swept key. OUT defaults to the
folder that holds the workdirs. Datasets a run also evaluates (eval.extra) get a "NAME loss" column.
--target LOSS adds, per setting, the first evaluated step whose val loss is at most LOSS and the training seconds
up to it (at the run's median train tokens/s: evaluations, start-up and compilation excluded).
"""
import csv
import dataclasses
import json
import math
import os

import numpy as np
from absl import flags

from pretrain import cli, configlib, storage
from pretrain.trainer import layout, ledger, metrics
from pretrain.errors import PretrainError

FLAGS = flags.FLAGS

# (metric, column title): a column appears when some run has the metric.
COLUMNS = (("val.loss", "val loss (nats/token)"), ("val.bits_per_token", "val bits/token"),
           ("val.bits_per_byte", "val bits/byte"),
           ("val.bits_above_entropy", "bits/token above entropy"), ("val.bits_above_best", "bits/token above best"),
           ("val.accuracy", "val accuracy"), ("val.macro_f1", "val macro-F1"),
           ("train.loss", "train loss"), ("wall_s", "wall time (s)"))


@dataclasses.dataclass
class Entry:
  workdir: str
  config: dict  # Flat: {"model.num_layers": 2, ...}.
  record: dict  # run.json, {} when the workdir has none.
  rows: list  # metrics.jsonl lines.

  @property
  def step(self) -> int:
    return max((row.get("step", 0) for row in self.rows), default=0)

  @property
  def finished(self) -> bool:
    return self.step >= self.config.get("train.steps", math.inf)

  def final(self, metric: str) -> float | None:
    if metric == "wall_s":
      return self.record.get("wall_s")
    split, _, key = metric.partition(".")
    last = [row for row in self.rows if row.get("split") == split and key in row]
    return last[-1][key] if last else None

  def to_target(self, target: float) -> tuple[float, float] | None:
    """(step, training seconds) of the first evaluation with val loss <= target; None if none reached it.
    Seconds are steps x tokens per step at the run's median train tokens/s, without its first window (which
    holds compilation), so they compare recipes, not start-ups."""
    reached = [row["step"] for row in self.rows if row.get("split") == "val" and row.get("loss", math.inf) <= target]
    if not reached:
      return None
    train = sorted((r for r in self.rows if r.get("split") == "train" and r.get("tokens_per_s")), key=lambda r: r["step"])
    speeds = [r["tokens_per_s"] for r in train]
    tokens_per_step = self.config.get("train.batch_size", 0) * self.config.get("model.context", 0)
    speed = float(np.median(speeds[1:] if len(speeds) > 1 else speeds))
    return float(reached[0]), reached[0] * tokens_per_step / speed


def find_workdirs(paths) -> list[str]:
  """Each path if it is a workdir (has metrics.jsonl), else its subfolders that are."""
  found = []
  for path in paths:
    if storage.exists(layout.metrics(path)):
      found.append(path)
      continue
    subdirs = [storage.join(path, d) for d in storage.listdir(path)]
    inside = [d for d in subdirs if storage.exists(layout.metrics(d))]
    if not inside:
      raise PretrainError(f"{path} has no metrics.jsonl, nor do its subfolders; pass workdirs of pretrain.main "
                          "or a sweep's --root")
    found += inside
  return found


def load(workdir: str) -> Entry:
  record = ledger.read(workdir) or {}
  config = record.get("config")
  if config is None:
    path = layout.config(workdir)
    if not storage.exists(path):
      raise PretrainError(f"{workdir} has neither run.json nor config.json; is it a workdir of pretrain.main?")
    config = json.loads(storage.read_text(path))
  flat = {key: tuple(v) if isinstance(v, list) else v for key, v in configlib.flatten(config).items()}  # hashable
  return Entry(workdir, flat, record, metrics.read(workdir))


def swept_keys(entries: list[Entry]) -> list[str]:
  """Keys that every run's config has, with differing values. A key that only some runs have (a field
  added to the code between runs) is not a setting anyone chose, so it does not split the runs."""
  keys = [key for key in entries[0].config if key != "seed" and all(key in e.config for e in entries)]
  return [key for key in keys if len({json.dumps(e.config[key], sort_keys=True) for e in entries}) > 1]


def group(entries: list[Entry], keys: list[str]) -> list[tuple[tuple, list[Entry]]]:
  """(values of the swept keys, the runs with them), sorted by value, runs by seed."""
  groups = {}
  for entry in entries:
    groups.setdefault(json.dumps([entry.config.get(key) for key in keys]), []).append(entry)
  ordered = sorted(groups.values(), key=lambda g: [_sort_key(g[0].config.get(key)) for key in keys])
  return [(tuple(g[0].config.get(key) for key in keys), sorted(g, key=lambda e: e.config.get("seed", 0)))
          for g in ordered]


def mean_std(values: list[float]) -> tuple[float, float]:
  values = np.array(values, dtype=float)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def write(out: str, workdirs: list[str], *, keys: list[str] | None = None, metric: str = "val.loss",
          command: str | None = None, failures=(), target: float | None = None, sort: bool = False) -> str:
  """Writes report.md, report.csv and the PNG plots into `out`; returns the path of report.md. `keys` are
  the swept keys (a sweep knows them); by default, those whose values differ across the runs."""
  entries = [load(w) for w in workdirs]
  done = [e for e in entries if e.finished]
  if not done:
    raise PretrainError(f"none of the {len(entries)} workdirs has finished training; nothing to report yet")
  keys = swept_keys(done) if keys is None else list(keys)
  groups = group(done, keys)
  if sort:  # Best first by `metric` (lowest, or highest where higher is better: accuracy, F1, harness scores).
    higher = any(word in metric for word in ("accuracy", "f1", "harness/"))
    mean = lambda runs: mean_std([v for v in (e.final(metric) for e in runs) if v is not None] or [math.nan])[0]
    groups = sorted(groups, key=lambda g: (math.isnan(mean(g[1])), -mean(g[1]) if higher else mean(g[1])))
  columns = [(m, title) for m, title in COLUMNS + _f1_columns(done) + _harness_columns(done) + _extra_eval_columns(done)
             if any(e.final(m) is not None for e in done)]
  if metric not in [m for m, _ in columns]:
    if all(e.final(metric) is None for e in done):
      raise PretrainError(f"--metric={metric} is in no finished run's metrics.jsonl; use SPLIT.KEY, e.g. val.loss")
    columns.append((metric, metric))
  os.makedirs(out, exist_ok=True)

  table = [[*map(_show, setting), str(len(runs)),
            *(_mean_std_text([v for v in (e.final(m) for e in runs) if v is not None], m) for m, _ in columns),
            *([] if target is None else _target_cells(runs, target))]
           for setting, runs in groups]
  header = [*keys, "seeds", *(title for _, title in columns),
            *([] if target is None else [f"steps to val {target:g}", f"train s to val {target:g}"])]
  with open(os.path.join(out, "report.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow([*keys, "seeds", *(f"{m}_{stat}" for m, _ in columns for stat in ("mean", "std"))])
    for setting, runs in groups:
      stats = [mean_std([v for v in (e.final(m) for e in runs) if v is not None] or [math.nan]) for m, _ in columns]
      writer.writerow([*setting, len(runs), *(x for pair in stats for x in pair)])

  plots = [_plot_curves(groups, keys, os.path.join(out, "loss_curves.png"))]
  for key in keys:
    name = f"{metric.replace('.', '_')}_vs_{key}.png"
    plots.append(_plot_metric(groups, keys, key, metric, os.path.join(out, name)))

  seeds = sorted({e.config.get("seed") for e in done}, key=_sort_key)
  lines = [f"# Report: {os.path.basename(os.path.abspath(out))}", "",
           f"{len(done)} finished runs, {len(groups)} setting(s) × seeds {', '.join(map(str, seeds))}; "
           f"swept: {', '.join(f'`{k}`' for k in keys) or 'nothing'}. Each cell is the mean ± standard deviation "
           "over seeds of the run's last metrics line.", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  lines += [f"Code: {_distinct(_code(e.record) for e in done)}. Hardware: {_distinct(_hardware(e.record) for e in done)}.",
            f"Wall time: {metrics.format_duration(sum(e.record.get('wall_s', 0.0) for e in done))} in all.", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in table]
  lines += _confusion_sections(groups, keys)
  unfinished = [e for e in entries if not e.finished]
  if unfinished:
    lines += ["", "Unfinished (not in the table):"]
    lines += [f"- {e.workdir}: step {e.step} of {e.config.get('train.steps')}" for e in unfinished]
  if failures:
    lines += ["", "Failed:"] + [f"- {name}: {error}" for name, error in failures]
  lines += [""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots] + [""]
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def _f1_columns(entries, most: int = 10) -> tuple:
  """(val.f1/NAME, title) per label name, in label order, when the runs' classes are at most `most`."""
  names = []
  for entry in entries:
    for row in entry.rows:
      names += [k[3:] for k in row if k.startswith("f1/") and row.get("split") == "val" and k[3:] not in names]
  return tuple((f"val.f1/{n}", f"val F1 {n}") for n in names) if len(names) <= most else ()


def _harness_columns(entries) -> tuple:
  """(val.harness/TASK/METRIC, title) for the lm-eval scores the runs logged at evaluations (eval.harness_tasks)."""
  names = []
  for entry in entries:
    for row in entry.rows:
      names += [k for k in row if k.startswith("harness/") and "_stderr" not in k and row.get("split") == "val"
                and k not in names]
  return tuple((f"val.{n}", n.removeprefix("harness/")) for n in names)


def _confusion_sections(groups, keys) -> list[str]:
  """Per setting, the final evaluations' confusion matrices added over its seeds, with the label names."""
  lines = []
  for setting, runs in groups:
    finals = [e.final("val.confusion") for e in runs]
    labels = next((e.final("val.labels") for e in runs if e.final("val.labels")), None)
    if labels is None or any(f is None for f in finals) or len(labels) > 20:
      continue
    total = np.sum(np.asarray(finals), axis=0)
    if not lines:
      lines = ["", "Confusion matrices of the final evaluations (rows: true label, columns: predicted), added over "
               "seeds:"]
    lines += ["", f"{_label(keys, setting) or 'all runs'} ({len(runs)} seeds):", "",
              "| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(labels, total)]
  return lines


def _extra_eval_columns(entries) -> tuple:
  """(NAME.loss, title) for the eval.extra datasets of any run: their splits in metrics.jsonl are their names."""
  names = sorted({str(e).partition(":")[0] for entry in entries for e in entry.config.get("eval.extra", ())})
  return tuple((f"{name}.loss", f"{name} loss (eval.extra)") for name in names)


def _target_cells(runs, target) -> list[str]:
  reached = [r for r in (e.to_target(target) for e in runs) if r is not None]
  if len(reached) < len(runs):
    return [f"not reached by {len(runs) - len(reached)} of {len(runs)}"] * 2
  return [_mean_std_text([r[0] for r in reached], "steps"), _mean_std_text([r[1] for r in reached], "seconds")]


def _mean_std_text(values, metric) -> str:
  if not values:
    return "–"
  mean, std = mean_std(values)
  digits = {"wall_s": 0, "steps": 0, "seconds": 1}.get(metric, 4)
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")


def _show(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_key(value):
  return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _distinct(texts) -> str:
  return "; ".join(dict.fromkeys(texts))


def _code(record) -> str:
  code = record.get("code") or {}
  if not code.get("commit"):
    return "not a git checkout"
  return f"commit {code['commit'][:10]}" + (" (with uncommitted changes)" if code.get("dirty") else "")


def _hardware(record) -> str:
  hw, packages = record.get("hardware"), record.get("packages") or {}
  if not hw:
    return "not recorded"
  return (f"{hw['cpu_count']} CPU cores ({hw['cpu']}), {hw['devices_used']} of {hw['device_count']} "
          f"{hw['device_kind']} device(s), {hw['process_count']} process(es), jax {packages.get('jax')}")


def _label(keys, values) -> str:
  return ", ".join(f"{key.rpartition('.')[2]}={_show(v)}" for key, v in zip(keys, values))


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")  # Files only: works without a display.
  import matplotlib.pyplot as plt
  return plt


def _plot_curves(groups, keys, path) -> str:
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4 + 0.22 * len(groups)))
  for i, (setting, runs) in enumerate(groups):
    for j, entry in enumerate(runs):
      for ax, split in zip(axes, ("train", "val")):
        rows = [row for row in entry.rows if row.get("split") == split and "loss" in row]
        ax.plot([row["step"] for row in rows], [row["loss"] for row in rows], color=f"C{i % 10}", lw=1, alpha=0.8,
                marker="o" if split == "val" else None, ms=3,
                label=(_label(keys, setting) or "runs") + f" ({len(runs)} seeds)" if j == 0 else None)
  for ax, split in zip(axes, ("train", "val")):
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=f"{split} loss")
    ax.grid(alpha=0.3)
  # Below both plots, one line per setting: labels of many swept keys are too long to sit on an axis.
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=1, frameon=False)
  fig.tight_layout(rect=(0, min(0.5, 0.03 * len(labels) + 0.02), 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _plot_metric(groups, keys, key, metric, path) -> str:
  """The final metric against one swept key: one line per setting of the other swept keys."""
  plt = _pyplot()
  i = keys.index(key)
  others = [k for k in keys if k != key]
  lines = {}
  for setting, runs in groups:
    values = [v for v in (e.final(metric) for e in runs) if v is not None]
    if values:
      rest = tuple(v for k, v in zip(keys, setting) if k != key)
      lines.setdefault(rest, []).append((setting[i], *mean_std(values)))
  xs = sorted({x for points in lines.values() for x, _, _ in points}, key=_sort_key)
  numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
  position = (lambda x: x) if numeric else {x: n for n, x in enumerate(xs)}.get
  fig, ax = plt.subplots(figsize=(6, 4))
  for rest, points in sorted(lines.items(), key=lambda item: [_sort_key(v) for v in item[0]]):
    points.sort(key=lambda p: _sort_key(p[0]))
    ax.errorbar([position(x) for x, _, _ in points], [m for _, m, _ in points], yerr=[s for _, _, s in points],
                marker="o", capsize=3, label=_label(others, rest) or None)
  if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
    ax.set_xscale("log")
    ax.minorticks_off()  # The swept values are the ticks.
  ax.set_xticks([position(x) for x in xs], [_show(x) for x in xs])
  ax.set(xlabel=key, ylabel=f"final {dict(COLUMNS).get(metric, metric)}", title="mean ± std over seeds")
  ax.grid(alpha=0.3)
  if others:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv):
  if len(argv) < 2:
    raise PretrainError("pass workdirs or a sweep folder: python -m pretrain.report DIR... [--out DIR]")
  workdirs = find_workdirs(argv[1:])
  local = [w for w in workdirs if not storage.is_remote(w)]  # The report itself is written locally.
  out = FLAGS.out or (os.path.commonpath([os.path.dirname(os.path.abspath(w)) for w in local]) if local else "report")
  path = write(out, workdirs, metric=FLAGS.metric, target=FLAGS.target, sort=FLAGS.sort)
  print(open(path).read())
  print(f"report: {path}, {os.path.join(out, 'report.csv')} and plots")


def define_flags():
  """Only when run as a program, so that importing this module (launch.sweep does) defines no flag twice."""
  flags.DEFINE_string("out", None, "Folder for report.md, report.csv and the plots; default: the workdirs' parent.")
  flags.DEFINE_string("metric", "val.loss", "Final metric plotted against each swept value: SPLIT.KEY of "
                      "metrics.jsonl (e.g. val.bits_above_entropy) or wall_s.")
  flags.DEFINE_bool("sort", False, "Order the table's settings by --metric, best first (e.g. --metric "
                    "val.bits_per_byte --sort).")
  flags.DEFINE_float("target", None, "A val loss: report the steps and training seconds each run took to reach it.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
