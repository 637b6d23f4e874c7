"""The short version of `make chaos` (loadtests/chaos.py): two replicas behind a real HAProxy
(Debian's package, deploy/haproxy/haproxy.cfg with only addresses and ports substituted), a
locust load through the balancer at half its measured peak, and in each scenario something
breaks: a rolling restart, a model rollout, a replica SIGKILLed, a worker SIGKILLed, the Python
client alone across a restart, the rolling restart and rollout under gRPC calls from several
channels, and a second model added and removed (the replicas serve VAE_MODELS=*). Not one
call may fail; a rollout must name its version in every answer and move each replica once.
`make chaos` runs the same for at least 30 s per scenario."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loadtests.chaos import SCENARIOS, Chaos, copy_newest, peak_rps
from loadtests.chaos_load import MachineTooBusy
from loadtests.cluster import HAPROXY, Cluster

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(),
                                reason="haproxy is not installed (make system-deps)")
SECONDS = 6.0


@pytest.fixture(scope="module")
def chaos(trained, tmp_path_factory):
    work = tmp_path_factory.mktemp("chaos")
    repo = copy_newest(trained["repository"], "digits", work / "repository")  # rollouts add
    with Cluster(repo, "digits", work, models="*") as cluster:
        try:
            peak = peak_rps(cluster.url, work, 3.0)
        except MachineTooBusy as exc:
            pytest.skip(f"the machine was too busy to measure the balancer's peak: {exc}")
        print(f"chaos: peak {peak:.0f} req/s through the balancer")
        yield Chaos(cluster, trained["checkpoint"], work, SECONDS, 0.5 * peak, [1, 8, 8])
    shutil.rmtree(work / "repository", ignore_errors=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nothing_fails(chaos, scenario):
    row = chaos.run(scenario)
    print(scenario, row)
    assert row["requests"] > 100, row
    assert not row["problems"], row
    # every failed call is accounted for: 0, except (a replica or a worker SIGKILLed) answers
    # cut mid-way, which no balancer can replay and the Python client, beside locust, retried
    assert row["failed"] == sum("cut mid-answer" in n for n in row["notes"]), row
    if scenario == "client-restart":  # the restart happened, and only the retries hid it
        assert "retried 0 times" not in row["notes"][-1], row


def test_only_answers_cut_by_a_dying_replica_are_excused():
    from loadtests.chaos_rules import cut_answers

    ok = {"t": 1.0, "ms": 5.0, "name": "/sample", "ok": True, "error": None}
    cut = {**ok, "ok": False, "error": "Incomplete response."}
    notes: list[str] = []
    assert cut_answers([ok, cut], notes) == [] and len(notes) == 1
    assert "cut mid-answer" in notes[0] and "/sample" in notes[0]
    other = {**ok, "ok": False, "error": "HTTPError 502"}
    assert cut_answers([ok, cut, other], []) == ["1 failed calls besides answers cut mid-way"]
