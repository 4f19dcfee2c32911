"""One BLAS thread per worker process: the kernels' matrices are small.

The numpy kernels call BLAS and LAPACK on small matrices only (the 121 x 121 noise model of a
source fit, 6400-long folds of the binning), where threads cost more than they bring; Beam
already runs elements in parallel. OpenBLAS's threads wait for work by spinning, so on a busy
or shared machine each small call took 5 to 50 times longer with them than without (a 121 x 121
solve: 7 to 56 ms against 1 ms at a load of 10; BENCHMARKS.md). The limit is set when the DoFns
doing the science are set up, so it holds in every worker of every runner, whatever imported
numpy first. A user's own setting (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS) is
left as it is.
"""
from __future__ import annotations

import functools
import os

USER_SETTINGS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@functools.lru_cache(maxsize=None)  # once per process
def single_threaded() -> bool:
    """Limit the BLAS libraries loaded in this process to one thread, unless the user chose a
    number; whether the limit was set."""
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return True
