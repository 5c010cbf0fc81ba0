"""Thin Airflow operators: templated fields, XCom and context; the work happens in hooks and services below."""
