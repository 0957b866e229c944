"""The wait policy of a compile's thread pools (arasc/openmp.py): set before numpy and torch load, a
user's kept."""
import os
import subprocess
import sys

SCRIPT = """
import os, sys
import arasc.openmp as openmp
seen = []
original = openmp.passive_waits
openmp.passive_waits = lambda: seen.append(original()) or seen[-1]
from arasc import cli
status = cli.main(["compile", "digits-cnn", "-o", sys.argv[1], "-q"])
print(status, seen, os.environ.get("OMP_WAIT_POLICY"), os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
"""


def compile_in_a_fresh_process(tmp_path, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")} | env
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "d.aras")], capture_output=True, text=True,
                          env=environment, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[-2]


def test_arasc_compile_sets_passive_waits_before_numpy_and_torch_load(tmp_path):
    assert compile_in_a_fresh_process(tmp_path) == "0 [True] PASSIVE 4"


def test_a_users_wait_policy_is_kept(tmp_path):
    assert compile_in_a_fresh_process(tmp_path, OMP_WAIT_POLICY="ACTIVE", OPENBLAS_THREAD_TIMEOUT="20") \
        == "0 [True] ACTIVE 20"



def test_every_command_sets_them():
    """`arasc run` (and any command) mixes numpy's products with numba's parallel loops too."""
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    script = SCRIPT.replace('["compile", "digits-cnn", "-o", sys.argv[1], "-q"]', '["models"]')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "0 [True] PASSIVE 4"
