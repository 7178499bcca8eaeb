"""The cluster launchers: their dry runs print the exact commands, and the SLURM script runs as written
under a stand-in for srun and scontrol."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.conftest import ROOT, read_metrics, run_main


def _out(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_slurm_script():
  text = _out("launch.slurm", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--",
              "--config", "configs/gpt2_124m.py", "--workdir", "/runs/x", "--config.optim.lr=3e-4")
  assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text and "#SBATCH --gpus-per-node=4" in text
  assert "#SBATCH --partition=gpu" in text
  assert 'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in text
  assert 'PRETRAIN_COORDINATOR="$head_node:12355"' in text and "#SBATCH --signal=TERM@120" in text
  assert "ARGS=(--config configs/gpt2_124m.py --workdir /runs/x --config.optim.lr=3e-4)" in text
  assert "exec \"$@\"' \\\n  task python -m pretrain.main \"${ARGS[@]}\" &" in text
  assert "--requeue" not in text
  result = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
  assert result.returncode == 0, result.stderr


STAND_IN_SRUN = """#!/bin/bash
while [ $# -gt 0 ] && [[ $1 == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i "$@" & pids+=($!); done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
rc=0
for p in "${pids[@]}"; do wait "$p"; s=$?; [ $s -ne 0 ] && [ $rc -eq 0 ] && rc=$s; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
exit $rc
"""


def test_slurm_script_runs_as_written_survives_sigterm_and_resumes(tmp_path):
  """Overrides that need quoting, 2 tasks under a stand-in srun; SIGTERM to the batch script leaves a
  checkpoint (exit 143, and a requeue request); resubmitting finishes with the one-process losses."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(STAND_IN_SRUN)
  (bin_dir / "scontrol").write_text('#!/bin/bash\necho "$@" >> "$SCONTROL_LOG"; echo localhost\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  args = ["--config", "configs/quickstart.py:tiny", "--config.train.steps=60", "--config.train.checkpoint_every=30",
          "--config.train.eval_every=30", "--config.parallel.strategy=mesh", "--config.parallel.mesh_shape=(-1,1)",
          "--config.optim.lr_multipliers=('^wte/=1.0',)"]
  text = _out("launch.slurm", "--nodes", "1", "--gpus-per-node", "2", "--requeue", "--port", str(20000 + os.getpid() % 20000),
              "--python", sys.executable, "--", *args, "--workdir", str(tmp_path / "job"))
  (tmp_path / "job.sbatch").write_text(text)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "localhost", "SLURM_NTASKS": "2",
         "SLURM_JOB_ID": "7", "SCONTROL_LOG": str(tmp_path / "scontrol.log"), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  job = subprocess.Popen(["bash", str(tmp_path / "job.sbatch")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  metrics = tmp_path / "job" / "metrics.jsonl"
  while time.time() < deadline and not (metrics.exists() and '"split": "train"' in metrics.read_text()):
    time.sleep(0.1)
  job.send_signal(signal.SIGTERM)
  assert job.wait(timeout=240) == 143
  assert any(p.name.isdigit() for p in (tmp_path / "job" / "checkpoints").iterdir())
  assert "requeue 7" in (tmp_path / "scontrol.log").read_text()
  subprocess.run(["bash", str(tmp_path / "job.sbatch")], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
  run_main(*args, "--config.parallel.strategy=single", "--workdir", tmp_path / "one")
  a, b = read_metrics(tmp_path / "job", "val"), read_metrics(tmp_path / "one", "val")
  assert [r["step"] for r in a] == [r["step"] for r in b] == [30, 60]
  np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], atol=1e-4)


def test_tpu_vm_commands():
  lines = _out("launch.tpu_vm", "--tpu", "v4-32", "--zone", "us-central2-b", "--", "--config", "configs/gpt2_124m.py",
               "--workdir", "gs://b/run").splitlines()
  assert len(lines) == 2
  assert lines[0].startswith("gcloud compute tpus tpu-vm ssh v4-32 --zone=us-central2-b --worker=all '--command=cd ")
  assert "pip install" in lines[0]
  assert "PRETRAIN_TPU_MULTIHOST=1 python3 -m pretrain.main --config configs/gpt2_124m.py --workdir gs://b/run" in lines[1]
  assert "--worker=all" in lines[1]
