"""The cluster launchers cannot run here; their dry runs print the exact commands, checked below."""
import subprocess
import sys

from tests.conftest import ROOT


def _out(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_slurm_script():
  text = _out("launch.slurm", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--",
              "--config", "configs/gpt2_124m.py", "--workdir", "/runs/x", "--config.optim.lr=3e-4")
  assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text and "#SBATCH --gpus-per-node=4" in text
  assert "#SBATCH --partition=gpu" in text
  assert 'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in text
  assert 'PRETRAIN_COORDINATOR="$head_node:12355"' in text
  assert ("srun --kill-on-bad-exit=1 bash -c 'CUDA_VISIBLE_DEVICES=$SLURM_LOCALID PRETRAIN_PROCESS_ID=$SLURM_PROCID "
          "exec python -m pretrain.main --config configs/gpt2_124m.py --workdir /runs/x --config.optim.lr=3e-4'") in text
  result = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
  assert result.returncode == 0, result.stderr


def test_tpu_vm_commands():
  lines = _out("launch.tpu_vm", "--tpu", "v4-32", "--zone", "us-central2-b", "--", "--config", "configs/gpt2_124m.py",
               "--workdir", "gs://b/run").splitlines()
  assert len(lines) == 2
  assert lines[0].startswith("gcloud compute tpus tpu-vm ssh v4-32 --zone=us-central2-b --worker=all '--command=cd ")
  assert "pip install" in lines[0]
  assert "PRETRAIN_TPU_MULTIHOST=1 python3 -m pretrain.main --config configs/gpt2_124m.py --workdir gs://b/run" in lines[1]
  assert "--worker=all" in lines[1]
