"""The pure parts of the benchmark tooling: medians and ratios, the alternation of rounds,
the pacing schedule, the figures taken from a run, argument handling, py-spy's command."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_cli
from bench import compare, profile, rebuild
from bench.figures import alternation, headline, median, medians, ratio
from bench.load import pacing_schedule, pacing_stats
from bench.platform import REPO, BenchPlatform, instance_name, processes_of


def test_median_ignores_missing_figures_and_is_none_without_any() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0]) == 2.5
    assert median([None, float("nan")]) is None
    assert median([]) is None


def test_ratio_is_candidate_over_base_and_none_when_undefined() -> None:
    assert ratio(150.0, 100.0) == 1.5
    assert ratio(None, 100.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_medians_take_every_key_of_any_run() -> None:
    runs: list[dict[str, float | None]] = [
        {"orders_per_s": 10.0, "rebuild_events_per_s": None},
        {"orders_per_s": 30.0, "rss_mib:read-models": 80.0},
        {"orders_per_s": 20.0},
    ]
    assert medians(runs) == {
        "orders_per_s": 20.0,
        "rebuild_events_per_s": None,
        "rss_mib:read-models": 80.0,
    }


def test_rounds_alternate_and_reverse_every_other_round() -> None:
    assert alternation(3) == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]
    order = alternation(4)
    assert [v for _, v in order].count(0) == [v for _, v in order].count(1) == 4


def test_pacing_schedule_spaces_orders_evenly_from_zero() -> None:
    assert pacing_schedule(4, 2.0) == [0.0, 0.5, 1.0, 1.5]
    assert pacing_schedule(0, 5.0) == []
    with pytest.raises(ValueError, match="positive"):
        pacing_schedule(3, 0)


def test_pacing_stats_measure_rate_achieved_and_lateness() -> None:
    offsets = [0.0, 0.5, 1.0, 1.5]
    on_time = pacing_stats(offsets, [100.0, 100.5, 101.0, 101.5])
    assert on_time["achieved_per_s"] == pytest.approx(2.0)
    assert on_time["max_behind_s"] == pytest.approx(0.0)
    late = pacing_stats(offsets, [100.0, 100.5, 102.0, 102.5])
    assert late["max_behind_s"] == pytest.approx(1.0)
    assert late["achieved_per_s"] == pytest.approx(3 / 2.5)
    assert pacing_stats([], []) == {"n": 0}


def a_result(**extra: Any) -> dict[str, Any]:
    """A run's result as `python -m bench` writes it (the fields headline reads)."""
    result: dict[str, Any] = {
        "processes": ["orders", "inventory"],
        "run": {"accepted": 100, "orders_per_s": 50.0},
        "latency": {
            "placed->paid": {"p50": 0.2, "p99": 0.9},
            "placed->shipped": {"p50": 1.0, "p99": 2.5},
        },
        "resources": {
            "orders": {"cpu_s": 1.0, "idle_cpu_pct_of_one_core": 3.0, "peak_rss_mib": 98.0},
            "inventory": {"cpu_s": 0.5, "idle_cpu_pct_of_one_core": 2.0, "peak_rss_mib": 101.0},
            "kafka": {"cpu_s": 0.3},
            "postgres": {"cpu_s": 0.2},
            "bench": {"cpu_s": 0.4},
            "foreign": {"cpu_s": 9.0},  # other runs on the machine: never the platform's
            "machine": {"cpu_s": 12.0},
        },
        "rebuild": {"events_per_s": 5000.0},
    }
    result.update(extra)
    return result


def test_headline_separates_platform_driver_and_machine_cpu() -> None:
    h = headline(a_result())
    assert h["orders_per_s"] == 50.0
    assert h["services_cpu_ms_per_order"] == pytest.approx(15.0)
    assert h["platform_cpu_ms_per_order"] == pytest.approx(20.0)  # + kafka + postgres
    assert h["platform_driver_cpu_ms_per_order"] == pytest.approx(24.0)
    assert h["machine_cpu_ms_per_order"] == pytest.approx(120.0)
    assert h["idle_services_cpu_pct"] == pytest.approx(5.0)
    assert h["placed_paid_p99_ms"] == pytest.approx(900.0)
    assert h["placed_shipped_p50_ms"] == pytest.approx(1000.0)
    assert h["rss_mib:inventory"] == 101.0
    assert h["rebuild_events_per_s"] == 5000.0
    assert h["paced_placed_paid_p99_ms"] is None  # no paced run


def test_headline_reports_the_paced_run_apart() -> None:
    paced = {
        "pacing": {"achieved_per_s": 24.5},
        "latency": {"placed->paid": {"p50": 0.1, "p99": 0.3}, "placed->shipped": {"p99": 0.8}},
    }
    h = headline(a_result(paced=paced))
    assert h["paced_achieved_per_s"] == 24.5
    assert h["paced_placed_paid_p99_ms"] == pytest.approx(300.0)
    assert h["paced_placed_shipped_p99_ms"] == pytest.approx(800.0)
    assert h["placed_paid_p99_ms"] == pytest.approx(900.0)  # the saturated one unchanged


def test_headline_of_a_run_without_figures_is_all_missing() -> None:
    h = headline({"processes": ["orders"]})
    assert h["orders_per_s"] is None
    assert h["platform_cpu_ms_per_order"] is None
    assert h["rss_mib:orders"] is None


def test_comparison_rows_give_b_over_a_and_skip_figures_neither_has() -> None:
    a = compare.Variant("A", REPO, runs=[headline(a_result()) for _ in range(3)])
    faster = a_result(run={"accepted": 100, "orders_per_s": 75.0})
    b = compare.Variant("B", REPO, runs=[headline(faster) for _ in range(3)])
    rows = {r["figure"]: r for r in compare.comparison_rows(a, b)}
    assert rows["orders_per_s"]["ratio"] == pytest.approx(1.5)
    assert rows["orders_per_s"]["better"] == "higher"
    assert rows["platform_cpu_ms_per_order"]["ratio"] == pytest.approx(1.0)
    assert rows["platform_cpu_ms_per_order"]["better"] == "lower"
    assert rows["orders_per_s"]["b_runs"] == [75.0, 75.0, 75.0]
    assert "paced_placed_paid_p99_ms" not in rows
    assert "rss_mib:orders" in rows
    text = compare.render_comparison(
        {
            "date": "today",
            "command": "python -m bench.compare --base main",
            "variants": [vars(a), vars(b)],
            "rounds": 3,
            "orders": 100,
            "seed": 1,
            "rows": list(rows.values()),
            "notes": ["only B has read-models"],
        }
    )
    assert "sustained orders/s end to end" in text
    assert "1.50" in text
    assert "only B has read-models" in text


def test_compare_needs_something_to_compare() -> None:
    with pytest.raises(SystemExit):
        compare.parse_args([])
    with pytest.raises(SystemExit):
        compare.parse_args(["--replicas", "1"])  # 1 against 1
    with pytest.raises(SystemExit):
        compare.parse_args(["--base", "main", "--rounds", "0"])


def test_compare_passes_other_options_to_the_bench_and_checks_them_first() -> None:
    args, passthrough = compare.parse_args(["--base", "main", "--concurrency", "16"])
    assert args.rounds == 3
    assert args.orders == 400
    assert passthrough == ["--concurrency", "16"]
    command = compare.bench_command(
        args, passthrough, Path("/base"), ["--replicas", "2"], Path("o")
    )
    assert command[1:3] == ["-m", "bench"]
    assert command[command.index("--platform-root") + 1] == "/base"
    assert command[command.index("--orders") + 1] == "400"
    assert command[-4:] == ["--replicas", "2", "--concurrency", "16"]
    with pytest.raises(SystemExit):
        compare.parse_args(["--base", "main", "--no-such-bench-option"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--base", "main", "--platform-root", "/x"])  # its own to set


def test_bench_arguments_of_the_paced_run_and_replicas() -> None:
    args = bench_cli.parse_args(["--rate", "25"])
    assert args.paced_orders == 500  # 20 s at the rate
    assert bench_cli.parse_args(["--rate", "2"]).paced_orders == 100  # at least 100
    assert bench_cli.parse_args(["--rate", "5", "--paced-orders", "40"]).paced_orders == 40
    assert bench_cli.parse_args([]).rate is None
    assert bench_cli.parse_args(["--replicas", "2"]).replicas == 2
    assert bench_cli.parse_args([]).platform_root == REPO
    for wrong in (
        ["--rate", "0"],
        ["--paced-orders", "10"],  # without --rate
        ["--replicas", "0"],
        ["--gil"],  # without --profile
        ["--profile", "--profile-services", "nope"],
        ["--platform-root", "/nonexistent"],
    ):
        with pytest.raises(SystemExit):
            bench_cli.parse_args(wrong)


def test_profile_targets_and_py_spy_command() -> None:
    available = ("orders", "inventory", "payments")
    assert profile.choose(None, available) == list(available)
    assert profile.choose("orders, payments", available) == ["orders", "payments"]
    with pytest.raises(ValueError, match="nope"):
        profile.choose("orders,nope", available)
    command = profile.record_command(
        42, Path("out.json"), fmt="speedscope", gil=True, rate=100, binary="py-spy"
    )
    assert command[:4] == ["py-spy", "record", "--pid", "42"]
    assert command[command.index("--format") + 1] == "speedscope"
    assert "--gil" in command
    assert "--gil" not in profile.record_command(
        42, Path("o.svg"), fmt="flamegraph", gil=False, rate=50, binary="py-spy"
    )
    with pytest.raises(ValueError, match="format"):
        profile.record_command(1, Path("x"), fmt="pdf", gil=False, rate=1, binary="py-spy")


def test_rebuild_report_line_is_parsed() -> None:
    out = "timeline, customer_360, kpis from topics: 24,802 events in 4.87 s (5,093 events/s);"
    assert rebuild.parse_report(out + " dry run, not swapped\n") == (24802, 4.87)
    assert rebuild.parse_report("error: no such topic") is None
    figure = rebuild.RebuildFigure(events=1000, seconds=0.5, wall_s=3.0)
    assert figure.events_per_s == 2000.0
    assert math.isnan(rebuild.RebuildFigure(0, 0.0, 1.0).events_per_s)


def test_replicas_are_named_as_make_run_names_them_and_processes_are_discovered() -> None:
    assert instance_name("orders", 1) == "orders"
    assert instance_name("read-models", 2) == "read-models-2"
    found = processes_of(REPO)
    assert found[:5] == ("orders", "inventory", "payments", "shipping", "customer-service")
    assert set(found) <= {*found[:5], "read-models"}


def test_every_process_of_a_run_shares_the_runs_key_store_and_has_its_own_database() -> None:
    # Without a shared key store payments cannot open the card token orders sealed
    # (DataKeyMissing) and no order of the benchmark ever ships.
    platform = BenchPlatform(prefix="bench-x.")
    orders = platform.environment(8001, "fulfil_bench_orders_1", "fulfil_bench_keys_1")
    payments = platform.environment(8002, "fulfil_bench_payments_1", "fulfil_bench_keys_1")
    assert orders["FULFIL_PRIVACY_KEYSTORE_DBNAME"] == "fulfil_bench_keys_1"
    assert payments["FULFIL_PRIVACY_KEYSTORE_DBNAME"] == "fulfil_bench_keys_1"
    assert (orders["POSTGRES_DBNAME"], payments["POSTGRES_DBNAME"]) == (
        "fulfil_bench_orders_1",
        "fulfil_bench_payments_1",
    )
    assert orders["FULFIL_TOPIC_PREFIX"] == "bench-x."
    assert orders["FULFIL_HTTP_PORT"] == "8001"


def test_bench_is_invoked_with_namespace_defaults_the_compare_relies_on() -> None:
    args = argparse.Namespace(orders=300, seed=7, idle_s=10.0, rate=12.5)
    command = compare.bench_command(args, [], REPO, [], Path("r.json"))
    assert "--skip-ceilings" in command
    assert command[command.index("--rate") + 1] == "12.5"
    assert command[command.index("--seed") + 1] == "7"
    assert command[command.index("--idle-s") + 1] == "10"


def test_hops_split_placed_to_shipped_into_relays_and_consumers() -> None:
    from bench.measure import CHAIN, TailRecord, TopicTail, hop_latencies

    tail = TopicTail()
    # Order "a": each event stored 1.0 s after the previous one was sent; each relay takes 0.25 s.
    for i, (_, _, topic, ce_type) in enumerate(CHAIN):
        stored = 100 + i * 1.25
        tail.records.append(TailRecord(topic, 0, i, "a", ce_type, stored, stored + 0.25, 10, ()))
    hops = hop_latencies(tail, ["a", "never-placed"])

    assert list(hops) == [
        "OrderPlaced stored -> sent (orders relay)",
        "OrderPlaced sent -> StockLocked stored (inventory)",
        "StockLocked stored -> sent (inventory relay)",
        "StockLocked sent -> PaymentCaptured stored (payments)",
        "PaymentCaptured stored -> sent (payments relay)",
        "PaymentCaptured sent -> OrderPaid stored (orders)",
        "OrderPaid stored -> sent (orders relay)",
        "OrderPaid sent -> ShipmentShipped stored (shipping)",
        "ShipmentShipped stored -> sent (shipping relay)",
    ]
    for name, values in hops.items():
        expected = 0.25 if "relay)" in name else 1.0
        assert values == [pytest.approx(expected)], name
