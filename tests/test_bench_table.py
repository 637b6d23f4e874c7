"""make bench's one table (benchmarks/table.py): goals judged from the scripts' JSON."""

from __future__ import annotations

from benchmarks.table import MET, MISSED, table_rows


def _cell(rps: float, p99: float) -> dict:
    return {"rps": rps, "p50": p99 / 2, "p99": p99}


def _p1(model: str, b1: list[float], b256: list[float]) -> list[dict]:
    return [{"model": model, "batch": b, "threads": t + 1, "ratio": r}
            for b, ratios in ((1, b1), (256, b256)) for t, r in enumerate(ratios)]


def _serving(p2: float = 1.6, p4: float = 1.6, p4_p99_on: float = 10.0, rss: float = 150.0,
             cold: float = 2.0) -> list[dict]:
    return [{"row": "P2 naive peer", **_cell(1000, 10)},
            {"row": "P2 this service", **_cell(1000 * p2, 8)},
            {"row": "P3 /encode 256 npy", **_cell(50, 80), "items_per_s": 12800,
             "ceiling_items_per_s": 25000},
            {"row": "P4 mnist batching=false", **_cell(1000, 20)},
            {"row": "P4 mnist batching=true", **_cell(1000 * p4, p4_p99_on)},
            {"row": "P4 digits batching=false", **_cell(1000, 10)},
            {"row": "P4 digits batching=true", **_cell(900, 12)},
            {"row": "P5 digits", "cold_start_s": cold, "rss_mb": {"1 arbiter": 130.0,
                                                                  "2 worker": rss}}]


P6 = [{"row": "Triton, V2 HTTP binary", **_cell(1000, 30)},
      {"row": "Triton, gRPC", **_cell(1000, 30)},
      {"row": "this service, V2 HTTP binary", **_cell(3000, 10)},
      {"row": "this service, gRPC", **_cell(999, 10)}]


def _status(rows: list[tuple], row: str, what: str = "") -> list[str]:
    return [r[4] for r in rows if r[0] == row and what in r[1]]


def test_every_goal_judged_from_the_numbers():
    rows = table_rows(_p1("digits mlp", [3.0, 2.5], [1.2, 1.1]), _serving(), P6)
    assert [r[0] for r in rows] == ["P1", "P2", "P3", "P4", "P4", "P5", "P6", "P6"]
    assert _status(rows, "P1") == [MET]
    assert _status(rows, "P2") == [MET] and "1.60×" in rows[1][3]
    assert _status(rows, "P3") == [MET] and "51%" in rows[2][3]
    assert _status(rows, "P4", "mnist") == [MET]
    assert _status(rows, "P4", "digits") == ["—"]  # reported, no goal (0.90× is fine)
    assert _status(rows, "P5") == [MET] and "130 + 150 MB" in rows[5][3]
    assert _status(rows, "P6", "HTTP") == [MET]
    assert _status(rows, "P6", "gRPC") == [MISSED]  # 0.999×: below 1.0


def test_missed_goals_and_absent_results_are_said():
    rows = table_rows(_p1("mnist conv", [2.5, 1.9], [1.2, 1.1]),
                      _serving(p2=1.49, p4=1.7, p4_p99_on=21.0, rss=301.0), None)
    assert _status(rows, "P1") == [MISSED]  # one thread count below 2× at batch 1
    assert _status(rows, "P2") == [MISSED]
    assert _status(rows, "P4", "mnist") == [MISSED]  # faster, but its p99 is worse
    assert _status(rows, "P5") == [MISSED]  # a process over 300 MB
    assert _status(rows, "P6") == [MISSED, MISSED]
    assert all("not measured" in r[3] for r in rows if r[0] == "P6")
    rows = table_rows(None, None, None)
    assert {r[0] for r in rows} == {"P1", "P2", "P3", "P4", "P5", "P6"}
    assert all(r[4] == MISSED and "not measured" in r[3] for r in rows)


def test_p1_runs_each_engine_in_its_own_process(trained):
    """The P1 benchmark itself, on one tiny cell: both engines answer, in processes of their
    own, and the row holds both rates."""
    from benchmarks.p1_onnx_vs_torch import bench_model

    (row,) = bench_model(str(trained["checkpoint"]), [4], [1], rounds=1, seconds=0.05)
    assert row["batch"] == 4 and row["threads"] == 1 and row["model"] == "digits mlp"
    assert row["torch"] > 0 and row["ort"] > 0
    assert row["ratio"] == row["ort"] / row["torch"]


def test_peer_rows_compare_each_peer_with_the_service_beside_it():
    from benchmarks.table import peer_rows

    cell = {"p50": 5.0, "p99": 9.0}
    peers = [{"row": "V2 REST JSON encoder: this service", "rps": 3000.0, **cell},
             {"row": "V2 REST JSON encoder: KServe", "rps": 1000.0, **cell},
             {"row": "V2 gRPC encoder: this service", "rps": 1400.0, **cell},
             {"row": "V2 gRPC encoder: KServe", "rps": 1000.0, **cell}]
    rows = peer_rows(peers)
    assert [r[4] for r in rows] == [MET, MISSED]
    assert "3.00×" in rows[0][3] and "1.40×" in rows[1][3]
    assert peer_rows(None)[0][4] == MISSED
