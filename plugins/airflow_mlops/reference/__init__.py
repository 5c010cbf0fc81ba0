"""Settings of the reference DAGs shipped with the project (dags/)."""
