import os

# Keep XLA from grabbing every core per process when tests run in parallel subprocesses,
# and make CPU results reproducible.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
