"""Training progress lines: throughput and ETA from recent step times, not from the start-up."""

from __future__ import annotations

from airflow_mlops.training.runtime import StepTimer, _duration


def test_eta_follows_recent_steps_not_a_slow_start():
    timer = StepTimer()
    timer.add(30.0, 64)  # the first step carries start-up: compiling, page faults, the first batch
    for _ in range(60):
        timer.add(0.01, 64)
    assert timer.step_s < 0.02
    assert 0.01 * 1000 * 0.9 < timer.step_s * 1000 < 0.01 * 1000 * 2
    assert 3000 < timer.samples_per_s < 7000


def test_durations_read_as_people_say_them():
    assert (_duration(42), _duration(600), _duration(7200)) == ("42s", "10.0min", "2.0h")
