"""Sweeps, run ledgers and reports: grid expansion, skipping finished runs, resuming unfinished ones,
failures that do not stop the sweep, the SLURM script, and report tables, CSV and plots."""
import csv
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, read_metrics, run_main

TINY = "configs/quickstart.py:tiny"


def _sweep():
  from launch import sweep
  return sweep


# --- grid expansion (no training) ---------------------------------------------------------------------

def test_product_grid_names_and_overrides(tmp_path):
  runs = _sweep().expand(TINY, ["model.num_layers=1,2", "optim.lr=1e-3,3e-3"], seeds=2, root=str(tmp_path),
                         fixed=[("train.steps", "10")])
  assert [r.name for r in runs] == [
      "num_layers=1_lr=1e-3_seed=0", "num_layers=1_lr=1e-3_seed=1", "num_layers=1_lr=3e-3_seed=0",
      "num_layers=1_lr=3e-3_seed=1", "num_layers=2_lr=1e-3_seed=0", "num_layers=2_lr=1e-3_seed=1",
      "num_layers=2_lr=3e-3_seed=0", "num_layers=2_lr=3e-3_seed=1"]
  last = runs[-1]
  assert last.workdir == os.path.join(str(tmp_path), last.name)
  assert last.overrides == [("train.steps", "10"), ("model.num_layers", "2"), ("optim.lr", "3e-3"), ("seed", "1")]
  assert (last.config.model.num_layers, last.config.optim.lr, last.config.seed, last.config.train.steps) == (2, 3e-3, 1, 10)
  command = _sweep().command(TINY, last)
  assert command[1:] == ["-m", "pretrain.main", "--config", TINY, "--workdir", last.workdir, "--config.train.steps=10",
                         "--config.model.num_layers=2", "--config.optim.lr=3e-3", "--config.seed=1"]


def test_zip_moves_axes_together_and_ambiguous_keys_keep_their_path():
  runs = _sweep().expand(TINY, ["model.vocab_size=0,64"], zips=["model.num_layers=1,2,3", "model.width=32,64,96"])
  assert len(runs) == 6
  assert runs[0].name == "vocab_size=0_num_layers=1_width=32_seed=0"
  assert [(r.config.model.num_layers, r.config.model.width) for r in runs[:3]] == [(1, 32), (2, 64), (3, 96)]
  runs = _sweep().expand(TINY, ["data.markov.vocab_size=8,16", "model.vocab_size=0,64"])
  assert runs[0].name == "data.markov.vocab_size=8_model.vocab_size=0_seed=0"


@pytest.mark.parametrize("sweeps, zips, seeds, expected", [
    (["model.num_layers=1,1"], [], 1, "share the workdir"),
    (["model.num_layers"], [], 1, "expected KEY=V1,V2"),
    (["seed=1,2"], [], 1, "--seeds N"),
    (["model.num_layers=1,2", "model.num_layers=3"], [], 1, "swept twice"),
    ([], ["model.num_layers=1,2", "model.width=32"], 1, "equal lengths"),
    (["model.nmu_layers=1,2"], [], 1, "unknown config key --config.model.nmu_layers"),
    (["model.num_layers=one"], [], 1, "expected an integer"),
    (["model.num_layers=1"], [], 0, "--seeds=0"),
])
def test_bad_sweeps_stop_before_any_run(sweeps, zips, seeds, expected):
  from pretrain.errors import ConfigError
  with pytest.raises(ConfigError, match=re.escape(expected)):
    _sweep().expand(TINY, sweeps, zips, seeds=seeds)


# --- what counts as finished (no training) ------------------------------------------------------------

def test_finished_means_ledger_finished_with_the_same_overrides(tmp_path):
  from pretrain.trainer import ledger
  sweep = _sweep()
  run, = sweep.expand(TINY, root=str(tmp_path))
  assert not sweep.is_finished(run)  # no workdir yet
  os.makedirs(run.workdir)
  with open(os.path.join(run.workdir, "metrics.jsonl"), "w") as f:  # no run.json: the metrics decide
    f.write(json.dumps({"step": 10, "split": "val", "loss": 1.0}) + "\n")
  assert not sweep.is_finished(run)
  with open(os.path.join(run.workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 20, "split": "val", "loss": 1.0}) + "\n")
  assert sweep.is_finished(run)
  record = {"status": "running", "config": ledger.resolved_config(run.config)}
  ledger._write(run.workdir, record)  # killed while running: rerun it, pretrain.main resumes
  assert not sweep.is_finished(run)
  ledger._write(run.workdir, {**record, "status": "finished"})
  assert sweep.is_finished(run)
  ledger._write(run.workdir, {**record, "status": "finished", "config": {**record["config"], "seed": 1}})
  assert not sweep.is_finished(run)  # another run's record
  longer, = sweep.expand(TINY, root=str(tmp_path), fixed=[("train.steps", "40")])
  assert longer.workdir == run.workdir and not sweep.is_finished(longer)  # more steps: resume and continue


def test_report_groups_by_keys_every_run_has_and_that_differ():
  from pretrain import report
  def entry(seed, layers, **extra):
    return report.Entry("w", {"seed": seed, "model.num_layers": layers, "train.steps": 20, **extra}, {}, [])
  entries = [entry(0, 1), entry(1, 1), entry(0, 2, **{"model.new_field": 3}), entry(1, 2, **{"model.new_field": 4})]
  assert report.swept_keys(entries) == ["model.num_layers"]  # a field only some runs have is not a setting
  groups = report.group(entries, ["model.num_layers"])
  assert [(setting, [e.config["seed"] for e in runs]) for setting, runs in groups] == [((1,), [0, 1]), ((2,), [0, 1])]


def test_report_steps_and_train_seconds_to_a_target_loss(tmp_path):
  from pretrain import report
  config = {"seed": 0, "train.steps": 30, "train.batch_size": 2, "model.context": 5, "model.num_layers": 1}
  rows = [{"split": "train", "step": 10, "tokens_per_s": 1.0, "loss": 3.0},  # compiling: not the run's speed
          {"split": "val", "step": 10, "loss": 2.5},
          {"split": "train", "step": 20, "tokens_per_s": 20.0, "loss": 2.0},
          {"split": "val", "step": 20, "loss": 1.9},  # 20 steps x 10 tokens at 20 tokens/s: 10 s
          {"split": "train", "step": 30, "tokens_per_s": 20.0, "loss": 1.8},
          {"split": "val", "step": 30, "loss": 1.7}]
  entry = report.Entry("w", config, {}, rows)
  assert entry.to_target(2.0) == (20.0, 10.0)
  assert entry.to_target(1.0) is None
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"seed": 0, "train": {"steps": 30, "batch_size": 2},
                                                   "model": {"context": 5, "num_layers": 1}}))
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  text = open(report.write(str(tmp_path), [str(workdir)], target=1.9)).read()
  assert "| steps to val 1.9 | train s to val 1.9 |" in text and "| 20 | 10.0 |" in text, text


# --- a real sweep of tiny runs --------------------------------------------------------------------------

ZIPPED = ["--zip", "model.num_layers=1,2,1", "--zip", "model.num_heads=4,4,3"]  # (1, 3) cannot work: width 32


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep") / "R"
  proc = run_main("--config", TINY, *ZIPPED, "--seeds", 2, "--root", root, check=False, module="launch.sweep")
  return root, proc


def test_failing_runs_do_not_stop_the_sweep_and_are_reported(swept):
  root, proc = swept
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stdout.count(": finished in") == 4, proc.stdout
  failed = [line for line in proc.stderr.splitlines() if line.startswith("  num_layers=1_num_heads=3_seed=")]
  assert len(failed) == 2 and all("num_heads=3 does not divide model.width=32" in line for line in failed), proc.stderr
  report = (root / "report.md").read_text()
  assert "Failed:" in report and "- num_layers=1_num_heads=3_seed=1: error: model.num_heads=3" in report


def test_every_workdir_has_a_ledger(swept):
  import jax
  root, _ = swept
  workdir = root / "num_layers=2_num_heads=4_seed=1"
  record = json.loads((workdir / "run.json").read_text())
  assert record["status"] == "finished" and record["step"] == 20 and record["attempt"] == 1
  assert record["config"]["model"]["num_layers"] == 2 and record["config"]["seed"] == 1
  assert len(record["code"]["commit"]) == 40 and isinstance(record["code"]["dirty"], bool)
  assert record["packages"]["jax"] == jax.__version__ and record["packages"]["orbax-checkpoint"]
  assert record["hardware"]["devices_used"] == 1 and record["hardware"]["device_count"] >= 1
  assert record["hardware"]["cpu_count"] == os.cpu_count() and record["hardware"]["process_count"] == 1
  assert 0 < record["wall_s"] < 600
  assert record["command"].startswith("python -m pretrain.main --config configs/quickstart.py:tiny --workdir ")
  assert record["final_metrics"]["val"] == read_metrics(workdir, "val")[-1]
  assert record["final_metrics"]["train"] == read_metrics(workdir, "train")[-1]


def test_report_table_csv_and_plots(swept, tmp_path):
  root, _ = swept
  report = (root / "report.md").read_text()
  rows = [line for line in report.splitlines() if line.startswith("| ")]
  assert rows[0].startswith("| model.num_layers | model.num_heads | seeds | val loss (nats/token) | val bits/token |")
  body = rows[1:]
  assert [r.split(" | ")[:3] for r in body] == [["| 1", "4", "2"], ["| 2", "4", "2"]], report  # num_heads=3 failed
  assert all(" ± " in r for r in body)
  with open(root / "report.csv") as f:
    table = list(csv.DictReader(f))
  losses = [read_metrics(root / f"num_layers={n}_num_heads=4_seed={s}", "val")[-1]["loss"] for n in (1, 2) for s in (0, 1)]
  assert float(table[0]["val.loss_mean"]) == pytest.approx((losses[0] + losses[1]) / 2, rel=1e-9)
  assert float(table[1]["val.loss_std"]) == pytest.approx(abs(losses[2] - losses[3]) / 2 ** 0.5, rel=1e-9)
  for name in ("loss_curves.png", "val_loss_vs_model.num_layers.png", "val_loss_vs_model.num_heads.png"):
    data = (root / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000 and f"]({name})" in report
  # From any set of workdirs, the report command groups by the keys that differ: here num_layers only.
  out = run_main(*sorted(root.glob("num_layers=*_num_heads=4_seed=*")), "--out", tmp_path, module="pretrain.report")
  again = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| ")]
  assert again[0] == rows[0].replace(" model.num_heads |", "")
  assert [r.split(" | ", 1)[1] for r in again[1:]] == [r.split(" | ", 2)[2] for r in body]
  assert out.stdout.startswith("# Report")


def test_rerun_skips_finished_resumes_unfinished_and_writes_slurm(swept, tmp_path):
  root, _ = swept
  # Make one run look killed after its step-10 checkpoint.
  killed = root / "num_layers=2_num_heads=4_seed=0"
  before = read_metrics(killed)
  shutil.rmtree(killed / "checkpoints" / "20")
  with open(killed / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in before if r["step"] <= 10)
  record = json.loads((killed / "run.json").read_text())
  record["status"] = "running"
  (killed / "run.json").write_text(json.dumps(record))
  proc = run_main("--config", TINY, *ZIPPED, "--seeds", 2, "--root", root, check=False, module="launch.sweep")
  assert "6 runs under" in proc.stdout and "3 already finished, 3 to run" in proc.stdout, proc.stdout
  assert "num_layers=2_num_heads=4_seed=0: finished" in proc.stdout
  assert "resumed from" in (killed / "log.txt").read_text()
  assert [(r["step"], r["split"], r["loss"]) for r in read_metrics(killed)] == \
         [(r["step"], r["split"], r["loss"]) for r in before]  # the resumed run is the uninterrupted one
  assert json.loads((killed / "run.json").read_text())["attempt"] == 2
  # Only the two failing runs are left: the SLURM script has one array task for each.
  script = tmp_path / "sweep.sbatch"
  run_main("--config", TINY, *ZIPPED, "--seeds", 2, "--root", root, "--slurm", script, "--parallel", 2,
           "--sbatch=--gres=gpu:1", module="launch.sweep")
  text = script.read_text()
  assert "#SBATCH --array=0-1%2\n" in text and "#SBATCH --gres=gpu:1\n" in text
  assert f"#SBATCH --output={root}/slurm-%A_%a.out" in text and f"cd {ROOT}\n" in text
  tasks = [line for line in text.splitlines() if line.startswith("  0) ") or line.startswith("  1) ")]
  assert len(tasks) == 2 and all("-m pretrain.main --config configs/quickstart.py:tiny --workdir" in t for t in tasks)
  assert f"{root}/num_layers=1_num_heads=3_seed=1 --config.model.num_layers=1 --config.model.num_heads=3 " \
         "--config.seed=1 ;;" in tasks[1]
  subprocess.run(["bash", "-n", str(script)], check=True)
