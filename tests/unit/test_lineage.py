"""Completeness of lineage records and their MLflow tag form."""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import LineageIncompleteError
from airflow_mlops.lineage import REQUIRED_FIELDS, LineageRecord, check_complete, missing_fields


def complete_record() -> LineageRecord:
    return LineageRecord(
        data={"uri": "/d/train.csv", "digest": "sha256:ab", "rows": 10, "schema": {"x": "float64"},
              "validation": {"success": True}},
        code={"git_commit": "abc123", "git_dirty": False, "package_version": "0.1.0"},
        hyperparameters={"epochs": 2, "lr": 0.01},
        framework={"model_class": "m.M", "torch": "2.13.0", "python": "3.11.7", "cuda": "none"},
        training_image={"reference": "img:1", "digest": "sha256:cd"},
        packages={"artifact": "lineage/packages.txt", "digest": "sha256:ef"},
        orchestration={"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 1},
        checkpoint={"uri": "/c/step-0000000010"},
    )


def test_complete_record_passes():
    record = complete_record()
    assert missing_fields(record) == []
    check_complete(record)


def test_false_and_zero_count_as_present():
    record = complete_record()
    record.code["git_dirty"] = False
    record.data["rows"] = 0
    assert missing_fields(record) == []


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_each_required_field_is_enforced(field):
    record = complete_record()
    if field == "hyperparameters":
        record.hyperparameters = {}
    else:
        group, key = field.split(".", 1)
        getattr(record, group)[key] = None if field != "data.schema" else {}
    with pytest.raises(LineageIncompleteError) as err:
        check_complete(record)
    assert err.value.missing == [field]
    assert field in str(err.value) and "not registered" in str(err.value)


def test_tags_are_strings_with_prefix():
    tags = complete_record().to_tags()
    assert tags["lineage.data.digest"] == "sha256:ab"
    assert tags["lineage.code.git_dirty"] == "false"
    assert tags["lineage.hyperparameters"] == '{"epochs":2,"lr":0.01}'
    assert all(isinstance(v, str) for v in tags.values())


def test_round_trip():
    record = complete_record()
    assert LineageRecord.from_dict(record.to_dict()) == record


def test_git_info_reads_the_repository_of_the_given_file_and_counts_untracked_files(tmp_path):
    import subprocess

    from airflow_mlops.lineage import git_info

    repo = tmp_path / "team-dags"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("config", "user.email", "t@example.com")
    run("config", "user.name", "t")
    dag_file = repo / "my_dag.py"
    dag_file.write_text("# a DAG\n")
    run("add", "my_dag.py")
    run("commit", "-q", "-m", "dag")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    clean = git_info(str(dag_file))
    assert clean["git_commit"] == head and clean["git_dirty"] is False
    assert clean["repository"] == str(repo)
    (repo / "new_factory.py").write_text("def f(): ...\n")  # never committed
    dirty = git_info(str(dag_file))
    assert dirty["git_dirty"] is True and dirty["changed_files"] == 1
