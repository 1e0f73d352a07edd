"""gateway.cpus and the ``cpus`` key of gateway.yaml: which CPUs the daemon binds itself to."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.check import check_report
from gateway.config.loader import load_config
from gateway.cpus import CpuSettingError, apply_cpus, choose, describe, idlest
from gateway.reload import restart_only_changes
from tests.unit.test_general_config import GENERAL, errors_of, write_set


def test_cpu_numbers_read_as_ranges() -> None:
    assert describe([5, 0, 1, 2, 8, 7]) == "0-2,5,7-8"
    assert describe({3}) == "3"


def test_the_idlest_cpus_are_those_idle_about_as_long_as_the_best() -> None:
    samples = iter([{0: 100, 1: 100, 2: 100, 3: 100}, {0: 110, 1: 200, 2: 195, 3: 150}])
    naps: list[float] = []
    assert idlest({0, 1, 2, 3}, 0.1, lambda: next(samples), naps.append) == [1, 2]  # 95 is within 10 % of 100
    assert naps == [0.1]
    assert idlest({0, 1}, 0.1, dict, lambda _: None) == [0, 1]  # no /proc/stat: any of them


def test_auto_takes_one_of_the_idlest_cpus_the_process_id_choosing() -> None:
    assert choose("auto", {0, 1, 2, 3}, lambda: [1, 3], pid=10) == {1}
    assert choose("auto", {0, 1, 2, 3}, lambda: [1, 3], pid=11) == {3}
    assert choose("auto", {0, 1}, lambda: [], pid=3) == {1}  # nothing sampled: any available CPU
    assert choose("auto", {4}, lambda: [4], pid=1) is None  # one CPU: nothing to choose


def test_all_and_lists_of_cpus() -> None:
    assert choose("all", {0, 1}, list, pid=1) is None
    assert choose((1,), {0, 1}, list, pid=1) == {1}
    assert choose((0, 1), {0, 1}, list, pid=1) is None  # already so
    expected = r"CPU 5-6 is not available to this process \(it may run on 0-1\); list CPUs from 0-1, or use auto"
    with pytest.raises(CpuSettingError, match=expected):
        choose((1, 5, 6), {0, 1}, list, pid=1)


def test_an_unavailable_cpu_is_an_error_naming_the_file_and_the_key() -> None:
    with pytest.raises(CpuSettingError) as raised:
        apply_cpus((4096,), "/etc/gw/gateway.yaml")
    assert str(raised.value).startswith("/etc/gw/gateway.yaml: cpus: CPU 4096 is not available")
    assert "or use auto" in str(raised.value)


def test_the_key_defaults_to_auto_and_is_validated(tmp_path: Path) -> None:
    assert load_config(write_set(tmp_path / "d", GENERAL), env={}).gateway.cpus == "auto"
    loaded = load_config(write_set(tmp_path / "l", {**GENERAL, "cpus": [3, 1]}), env={})
    assert loaded.gateway.cpus == (1, 3)
    assert load_config(write_set(tmp_path / "a", {**GENERAL, "cpus": "all"}), env={}).gateway.cpus == "all"
    for name, bad in (("one", "one"), ("empty", []), ("negative", [-1]), ("text", ["0"]), ("twice", [1, 1])):
        [problem] = errors_of(write_set(tmp_path / name, {**GENERAL, "cpus": bad}))
        assert problem.pointer == "/cpus", bad
        assert "is not a valid cpus setting" in problem.message
        assert "auto (default" in problem.expected and "a list of CPU numbers" in problem.expected


def test_a_changed_setting_needs_a_restart(tmp_path: Path) -> None:
    before = load_config(write_set(tmp_path / "b", GENERAL), env={}).gateway
    after = load_config(write_set(tmp_path / "b", {**GENERAL, "cpus": [0]}), env={}).gateway
    assert restart_only_changes(before, after) == [f"{after.file}: cpus"]


def test_check_says_where_the_gateway_will_run(tmp_path: Path) -> None:
    for name, setting, words in (("a", None, "runs on one CPU, the least busy at start (cpus: auto)"),
                                 ("b", "all", "runs where the kernel places its threads (cpus: all)"),
                                 ("c", [2, 0, 1, 5], "runs on CPUs 0-2,5 (cpus)")):
        general = GENERAL if setting is None else {**GENERAL, "cpus": setting}
        code, text = check_report(write_set(tmp_path / name, general), env={})
        assert code == 0 and words in text, text
