"""em-accel benchmark harness: ``python -m bench [family ...]``."""
