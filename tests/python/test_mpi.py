"""Two, three and four ranks under mpirun with mpi4py (mpi_worker.py does the comparing)."""
import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_each_rank_gets_the_single_process_result(ranks):
    pytest.importorskip("mpi4py", reason="python3-mpi4py is not installed")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("mpirun is not installed")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1")
    worker = os.path.join(os.path.dirname(__file__), "mpi_worker.py")
    run = subprocess.run([mpirun, "-np", str(ranks), sys.executable, worker], env=env, capture_output=True,
                         text=True, timeout=300)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    for rank in range(ranks):
        assert f"rank {rank} of {ranks}: ok" in run.stdout, report
