"""What a chaos scenario must not break (loadtests/chaos.py), judged from the calls its load
recorded: rollout rules (every answer names old or new, no replica goes back), answers cut by
a dying replica, the Python client's failures, answers per version."""

from __future__ import annotations

from loadtests.chaos_load import ClientLoad


def rollout_rules(calls: list[dict], old: int, new: int, by: str) -> list[str]:
    """What a rollout broke: answers without a version, versions other than old/new, and, per
    `by` (replica or channel), an old answer that began after a new one had ended."""
    problems = []
    if any(c["ok"] and c["version"] is None for c in calls):
        problems.append("an answer named no model version")
    seen = {int(c["version"]) for c in calls if c["ok"] and c["version"] is not None}
    if not seen <= {old, new} or new not in seen:
        problems.append(f"versions answered {sorted(seen)}, expected {old} then {new}")
    for key in sorted({c.get(by) for c in calls} - {None}) if by else []:
        mine = sorted((c for c in calls if c.get(by) == key and c["ok"]), key=lambda c: c["t"])
        first_new_end = min((c["t"] + c["ms"] / 1000 for c in mine
                             if int(c["version"]) == new), default=None)
        back = [c for c in mine if first_new_end is not None and c["t"] > first_new_end
                and int(c["version"]) == old]
        if back:
            problems.append(f"{by} {key} answered version {old} again after {new} "
                            f"({len(back)} times)")
    return problems


def cut_answers(calls: list[dict], notes: list[str]) -> list[str]:
    """Failures other than answers cut mid-way by the death of the replica or worker answering
    them (named in `notes`)."""
    cut = [c for c in calls if not c["ok"] and "Incomplete response" in (c["error"] or "")]
    for c in cut:
        notes.append(f"{c['name']} at {c['t']:.3f} was cut mid-answer: the process answering "
                     "it died after the balancer had forwarded part of the answer, so it could "
                     "not replay it")
    other = sum(not c["ok"] for c in calls) - len(cut)
    return [f"{other} failed calls besides answers cut mid-way"] if other else []


def client_failures(client: ClientLoad, notes: list[str]) -> list[str]:
    calls = client.calls()
    failed = sum(not c["ok"] for c in calls)
    notes.append(f"the Python client through the balancer: {len(calls):,} calls, {failed} failed, "
                 f"{client.retries()} retried")
    return [f"the Python client failed {failed} calls"] if failed or not calls else []


def switch_counts(calls: list[dict], by: str) -> list[str]:
    """Answers per version, per replica (or in all): 'r1: 7,052 × v2 then 2,335 × v3'."""
    out = []
    for key in sorted({c.get(by) for c in calls} - {None}) if by else [None]:
        mine = [c for c in calls if c["ok"] and (key is None or c.get(by) == key)]
        counts = {v: sum(c["version"] == v for c in mine) for v in
                  sorted({c["version"] for c in mine}, key=lambda v: int(v or 0))}
        out.append(f"{key or 'all'}: " + " then ".join(f"{n:,} × v{v}"
                                                        for v, n in counts.items()))
    return out
