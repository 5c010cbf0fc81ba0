#!/bin/sh
# One PostgreSQL server, two databases, each owned by a login role of its own that can do nothing else:
# Airflow's metadata (AIRFLOW_DB, role AIRFLOW_DB_USER) and MLflow's tracking and registry (MLFLOW_DB,
# role MLFLOW_DB_USER). Neither role can create roles or databases, nor connect to the other's database.
# Run by the postgres image on first start (docker-entrypoint-initdb.d) and by include/scripts/topology.py.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
  -v airflow_db="$AIRFLOW_DB" -v airflow_user="$AIRFLOW_DB_USER" -v airflow_password="$AIRFLOW_DB_PASSWORD" \
  -v mlflow_db="$MLFLOW_DB" -v mlflow_user="$MLFLOW_DB_USER" -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"airflow_user" LOGIN PASSWORD :'airflow_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE :"airflow_db" OWNER :"airflow_user";
REVOKE ALL ON DATABASE :"airflow_db" FROM PUBLIC;
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_user";
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
SQL
