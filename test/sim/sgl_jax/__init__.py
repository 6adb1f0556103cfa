"""Test double of sgl-project/sglang-jax for tpu-deploy's simulated TPU cloud (see test/sim/README.md)."""

__version__ = "0.0.0+tpd-sim-double"
