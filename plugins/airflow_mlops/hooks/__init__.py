"""Connections and clients: MLflow, storage (local disk and S3)."""
