"""Evaluation, promotion gate, aliases per environment, alias history and rollback on the MLflow registry."""
