"""Drift detection (Evidently), performance monitoring with delayed labels, and the damping trigger policy."""
