"""`make chaos`: two replicas behind HAProxy (loadtests/cluster.py), a bounded load through the
balancer at a fraction of its measured peak, and in each scenario something breaks:

    rolling         each replica drained (SIGTERM) and replaced, one after the other (HTTP load)
    rollout         a new model version exported into the shared repository while serving
    replica-loss    one replica SIGKILLed (no drain), later started again
    worker-kill     a replica with two BentoML workers loses one to SIGKILL
    client-restart  no balancer: the Python client alone against a replica that restarts
    grpc-rolling    the rolling restart under the same rate of gRPC calls (several channels)
    grpc-rollout    the rollout under gRPC calls
    model-churn     a second model exported into the repository, served, then its folder
                    removed, while the load calls the model that stays

The replicas serve every model of the repository (VAE_MODELS=*), the load's model being the
default one.

    python -m loadtests.chaos --seconds 30 --fraction 0.5 --results results/chaos

Each scenario runs for at least --seconds and reports requests, failures, p99 and the errors;
the run exits non-zero when any call failed or a rollout broke its rules. The model served is
a copy of the repository's newest version (the caller's repository is never written); the
rollout exports --checkpoint into that copy with the project's exporter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from loadtests.chaos_load import ClientLoad, GrpcLoad, HttpLoad, MachineTooBusy, summary
from loadtests.chaos_rules import client_failures, cut_answers, rollout_rules, switch_counts
from loadtests.cluster import Cluster
from modelrepo.repository import list_versions

SCENARIOS = ("rolling", "rollout", "replica-loss", "worker-kill", "client-restart",
             "grpc-rolling", "grpc-rollout", "model-churn")
CHURNED = "churned"  # the model that comes and goes in model-churn


def copy_newest(repository: Path, model: str, dest: Path) -> Path:
    """dest/<model>/<v> = the newest version v of repository/<model> (the manifest names v)."""
    newest = max(list_versions(repository, model))
    target = dest / model / str(newest)
    shutil.rmtree(dest / model, ignore_errors=True)
    shutil.copytree(Path(repository) / model / str(newest), target)
    return dest


def versions_served(url: str) -> int:
    return int(httpx.post(url + "/model", json={}, timeout=10).json()["version"])


class Chaos:
    def __init__(self, cluster: Cluster, checkpoint: Path | None, work: Path, seconds: float,
                 rate: float, shape: list[int]):
        self.cluster, self.checkpoint, self.work = cluster, checkpoint, work
        self.seconds, self.rate, self.shape = seconds, rate, shape
        self.warm = min(5.0, seconds / 4)  # load before the fault

    def _timed(self, load, action: Callable[[], list[str]]) -> tuple[list[dict], list[str]]:
        """Run `load`, act after the warm-up, keep the load on until --seconds have passed and
        for at least a few seconds after the action, so its aftermath is measured too."""
        with load:
            if isinstance(load, HttpLoad):
                load.wait_started()  # the warm-up and the fault begin once the load has
            t0 = time.monotonic()
            time.sleep(self.warm)
            notes = action()
            time.sleep(max(self.seconds - (time.monotonic() - t0), 3.0))
        return load.calls(), notes

    def http(self) -> HttpLoad:
        return HttpLoad(self.cluster.url, self.work, self.rate)

    def grpc(self) -> GrpcLoad:
        return GrpcLoad(self.cluster.grpc_address, self.shape, threads=4, rate=self.rate)

    # -- the faults ----------------------------------------------------------------------------
    def restart_each(self) -> list[str]:
        notes = []
        for i in (0, 1):
            t = time.monotonic()
            code = self.cluster.drain_replica(i)
            self.cluster.start_replica(i)
            self.cluster.wait_both_up()
            notes.append(f"r{i + 1} drained (exit {code}) and back in "
                         f"{time.monotonic() - t:.1f} s")
        return notes

    def export_new_version(self) -> list[str]:
        if self.checkpoint is None:
            raise SystemExit("rollout: --checkpoint is needed (the model to export)")
        repo, model = self.cluster.repository, self.cluster.model
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(self.checkpoint),
                        "--repository", str(repo), "--name", model, "--reload-data"],
                       check=True, capture_output=True)
        new = max(list_versions(repo, model))
        exported = time.monotonic() - t
        deadline = time.monotonic() + 60
        for proc in self.cluster.replicas:  # both replicas' watchers move to it
            while versions_served(proc.url) != new:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.url} never served version {new}")
                time.sleep(0.2)
        return [f"version {new} exported in {exported:.1f} s, served by both replicas "
                f"{time.monotonic() - t - exported:.1f} s later"]

    def _model_served(self, url: str, name: str) -> bool:
        r = httpx.post(url + "/model", json={"model": name}, timeout=10)
        if r.status_code not in (200, 404):
            raise RuntimeError(f"{url} /model {name}: {r.status_code} {r.text}")
        return r.status_code == 200

    def _until_all(self, name: str, served: bool) -> float:
        t, deadline = time.monotonic(), time.monotonic() + 60
        for proc in self.cluster.replicas:
            while self._model_served(proc.url, name) != served:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.url}: model {name} never "
                                       f"{'served' if served else 'retired'}")
                time.sleep(0.1)
        return time.monotonic() - t

    def add_and_remove_model(self) -> list[str]:
        """Export a second model (published whole, as the exporter does), wait until both
        replicas serve it, keep it a moment under load, then remove its folder."""
        if self.checkpoint is None:
            raise SystemExit("model-churn: --checkpoint is needed (the model to export)")
        repo = self.cluster.repository
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(self.checkpoint),
                        "--repository", str(repo), "--name", CHURNED, "--variants", "",
                        "--reload-data"], check=True, capture_output=True)
        exported = time.monotonic() - t
        added = self._until_all(CHURNED, True)
        time.sleep(min(2.0, self.seconds / 4))
        gone = self.work / f".{CHURNED}-removed"
        shutil.rmtree(gone, ignore_errors=True)
        os.rename(repo / CHURNED, gone)  # the folder disappears at once
        retired = self._until_all(CHURNED, False)
        shutil.rmtree(gone, ignore_errors=True)
        return [f"model {CHURNED} exported in {exported:.1f} s, served by both replicas "
                f"{added:.1f} s later; its folder removed, 404 on both {retired:.1f} s later"]

    def lose_replica(self) -> list[str]:
        self.cluster.kill_replica(1)
        time.sleep(max(self.seconds / 3, 4.0))  # served by r1 alone meanwhile
        t = time.monotonic()
        self.cluster.start_replica(1)
        self.cluster.wait_both_up()
        return [f"r2 SIGKILLed; restarted and back in {time.monotonic() - t:.1f} s"]

    def kill_worker(self) -> list[str]:
        before = self.cluster.workers(0)
        os.kill(before[0], signal.SIGKILL)
        t = time.monotonic()
        while True:
            now = self.cluster.workers(0)
            if len(now) == len(before) and before[0] not in now:
                break
            if time.monotonic() - t > 60:
                raise TimeoutError(f"worker {before[0]} was not replaced: {now}")
            time.sleep(0.1)
        return [f"r1 worker {before[0]} of {len(before)} SIGKILLed; its replacement "
                f"started in {time.monotonic() - t:.1f} s"]

    @contextlib.contextmanager
    def _workers(self, n: int) -> Iterator[None]:
        """r1 with n BentoML workers for the scenario, then one again (so it moves as one)."""
        self.cluster.drain_replica(0)
        self.cluster.start_replica(0, workers=n)
        self.cluster.wait_both_up()
        try:
            yield
        finally:
            self.cluster.drain_replica(0)
            self.cluster.start_replica(0)
            self.cluster.wait_both_up()

    # -- the scenarios -------------------------------------------------------------------------
    def run(self, name: str) -> dict:
        problems: list[str] = []
        if name in ("rolling", "grpc-rolling"):
            calls, notes = self._timed(self.http() if name == "rolling" else self.grpc(),
                                       self.restart_each)
        elif name in ("rollout", "grpc-rollout"):
            old = versions_served(self.cluster.url)
            calls, notes = self._timed(self.http() if name == "rollout" else self.grpc(),
                                       self.export_new_version)
            new = versions_served(self.cluster.url)
            # per replica over HTTP (the balancer names it); a gRPC channel through the
            # balancer reaches both replicas, so there only the versions themselves are checked
            problems = rollout_rules(calls, old, new, "replica" if name == "rollout" else "")
            notes += switch_counts(calls, "replica" if name == "rollout" else "")
        elif name in ("replica-loss", "worker-kill"):
            # beside locust (which never retries), the project's client through the balancer:
            # a call whose answer had begun when its process died cannot be replayed by the
            # balancer (it already forwarded part of it); a retrying client recovers it
            two = self._workers(2) if name == "worker-kill" else contextlib.nullcontext()
            with two, ClientLoad(self.cluster.url, threads=2, rate=self.rate / 10) as client:
                calls, notes = self._timed(self.http(), self.lose_replica
                                           if name == "replica-loss" else self.kill_worker)
            problems = cut_answers(calls, notes) + client_failures(client, notes)
        elif name == "model-churn":
            calls, notes = self._timed(self.http(), self.add_and_remove_model)
        elif name == "client-restart":
            replica = self.cluster.replicas[1]
            load = ClientLoad(replica.url, threads=4, rate=self.rate)
            calls, notes = self._timed(load, lambda: self.restart_one(1))
            notes.append(f"the client retried {load.retries()} times, slowest call "
                         f"{max(c['ms'] for c in calls) / 1000:.1f} s")
        else:
            raise ValueError(f"unknown scenario {name!r} ({', '.join(SCENARIOS)})")
        problems += [n for n in notes if "exit" in n and "(exit 0)" not in n]
        return {"scenario": name, **summary(calls), "notes": notes, "problems": problems}

    def restart_one(self, i: int) -> list[str]:
        t = time.monotonic()
        code = self.cluster.drain_replica(i)
        self.cluster.start_replica(i)
        return [f"r{i + 1} drained (exit {code}) and restarted in {time.monotonic() - t:.1f} s"]


def peak_rps(url: str, work: Path, seconds: float) -> float:
    """Requests/s of unpaced locust MixUsers through the balancer (the first 2 s after its
    first answer left out); MachineTooBusy when the load never got going."""
    load = HttpLoad(url, work, 0.0, users=16)
    with load:
        load.wait_started()
        time.sleep(seconds + 2)
    calls = load.calls()
    start = min(c["t"] for c in calls) + 2
    steady = [c for c in calls if c["t"] >= start]
    if len(steady) < 10:
        raise MachineTooBusy(f"only {len(steady)} answers in {seconds:g} s of unpaced load")
    return len(steady) / (max(c["t"] for c in steady) - start)


def table(rows: list[dict]) -> str:
    out = ["| scenario | requests | failed | p99 ms | req/s | what happened |",
           "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['scenario']} | {r['requests']:,} | {r['failed']} | {r['p99_ms']} | "
                   f"{r['rps']} | {'; '.join(r['notes'] + r['problems'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--model", default="digits")
    p.add_argument("--checkpoint", default="runs/digits/checkpoint.pt",
                   help="what the rollout exports as the new version")
    p.add_argument("--seconds", type=float, default=30.0, help="per scenario, at least")
    p.add_argument("--fraction", type=float, default=0.5, help="of the measured peak")
    p.add_argument("--results", default="results/chaos")
    p.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    a = p.parse_args(argv)
    work = Path(a.results).resolve()
    work.mkdir(parents=True, exist_ok=True)
    repo = copy_newest(Path(a.repository), a.model, work / "repository")
    rows = []
    with Cluster(repo, a.model, work, models="*") as cluster:
        shape = httpx.post(cluster.url + "/model", json={}, timeout=10).json()["input"]["shape"]
        try:
            peak = peak_rps(cluster.url, work, 10.0)
        except MachineTooBusy as exc:
            print(f"chaos: the machine is too busy to measure: {exc}", file=sys.stderr)
            return 2
        rate = a.fraction * peak
        print(f"chaos: peak through the balancer {peak:.0f} req/s; load {rate:.0f} req/s "
              f"({a.fraction:.0%}), >= {a.seconds:g} s per scenario", flush=True)
        chaos = Chaos(cluster, Path(a.checkpoint), work, a.seconds, rate, shape)
        for name in a.scenarios:
            rows.append(chaos.run(name))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    (work / "chaos.json").write_text(json.dumps({"peak_rps": peak, "rate": rate,
                                                 "seconds": a.seconds, "rows": rows}, indent=1))
    print(table(rows))
    bad = [r["scenario"] for r in rows if r["problems"] or
           r["failed"] != sum("cut mid-answer" in n for n in r["notes"])]
    if bad:
        print(f"chaos: failures or broken rules in {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
