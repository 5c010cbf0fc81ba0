#!/bin/sh
# One PostgreSQL server, two databases: Airflow's metadata (POSTGRES_DB) and MLflow's tracking and registry.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE ${MLFLOW_DB:-mlflow} OWNER ${POSTGRES_USER};
SQL
