"""The xdplb engine: plain Python behind every module, the CLI and the boot units (see cli.py)."""

# The collection's version (galaxy.yml; tests/unit/test_backend_metrics.py keeps them equal), in the
# exporters' build_info metrics.
VERSION = "0.1.0"
