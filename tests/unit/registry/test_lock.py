"""Pure parts of the registry lock: names of its generations and expiry on the server's clock."""

from __future__ import annotations

import pytest

from airflow_mlops.registry.lock import clock_name, generation_name, is_expired, is_lock_model


@pytest.mark.parametrize(
    ("renewed_ms", "now_ms", "ttl_s", "expired"),
    [
        (1_000_000, 1_000_000, 30, False),
        (1_000_000, 1_030_000, 30, False),  # exactly at the ttl: still held
        (1_000_000, 1_030_001, 30, True),
        (1_000_000, 999_000, 30, False),  # a stamp from the future (replicas) never counts as expired
    ],
)
def test_expiry_compares_two_server_stamps(renewed_ms, now_ms, ttl_s, expired):
    assert is_expired(renewed_ms, now_ms, ttl_s) is expired


def test_generation_names_sort_by_number_and_are_lock_models():
    names = [generation_name("m", n) for n in (2, 10, 1)]
    assert sorted(names) == [generation_name("m", 1), generation_name("m", 2), generation_name("m", 10)]
    assert all(is_lock_model(n) for n in [*names, clock_name("m")])
    assert not is_lock_model("m")
