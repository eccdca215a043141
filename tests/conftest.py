import os

# Keep XLA from grabbing every core per process when tests run in parallel subprocesses,
# and make CPU results reproducible.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
# The tests check arithmetic, not speed: compile at LLVM -O1 (the suite spends most of its time compiling:
# 728 -> 626 s; the HLO is the same and every test passes, the fingerprint's pinned values included). Not -O0:
# faster still, but it changed results (NaN gradients in the dense CNN reference, a 1-ulp init difference).
# The benches compile at XLA's default level. An XLA_FLAGS of the caller's that names a level keeps it.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " " + TEST_XLA_FLAGS
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The built-in cost model for the whole run (the CLI subprocesses inherit it): a developer's calibrated
# file (`jaxswarm calibrate`) never changes which layout `auto` picks, so never a test's result.
os.environ["JAXSWARM_COST_MODEL"] = "builtin"
if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # One XLA compilation cache for the run's processes (the workers and the CLI subprocesses inherit it):
    # the many tests that build the same program compile it once. Fresh per run, removed at its end.
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxswarm-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)


import jax  # noqa: E402  (after the environment above)
import pytest  # noqa: E402


class CompileCounter:
    """Counts XLA backend compiles (jax.monitoring's compile event) while entered, with their names."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __enter__(self):
        self.count, self.names = 0, []
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1
            self.names.append(kwargs.get("fun_name"))

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


@pytest.fixture
def compiles():
    """``with compiles() as c: ...`` counts the compiles of the block (``c.count``, ``c.names``)."""
    return CompileCounter
