"""The model registry page served by the Airflow API server: registered models, versions, aliases, lineage."""
