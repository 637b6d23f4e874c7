"""service/deadlines.py: one sweep cancels requests past their deadline, and only those."""

from __future__ import annotations

import asyncio

from service.lifecycle.deadlines import Deadlines


def test_late_request_is_cancelled_and_told_apart_from_other_cancellations():
    async def main() -> None:
        d = Deadlines(timeout_s=0.2, tick=0.05)
        outcome = {}

        async def request(name: str, work: float) -> None:
            task = d.enter()
            try:
                await asyncio.sleep(work)
                outcome[name] = "done"
            except asyncio.CancelledError:
                if not d.timed_out(task):
                    outcome[name] = "cancelled elsewhere"
                    raise
                outcome[name] = "timed out"
                await asyncio.sleep(0)  # the task goes on normally after its deadline
            finally:
                d.leave(task)

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        quick = asyncio.create_task(request("quick", 0.01))
        slow = asyncio.create_task(request("slow", 5.0))
        other = asyncio.create_task(request("other", 5.0))
        await asyncio.sleep(0.02)
        other.cancel()
        await asyncio.gather(quick, slow, other, return_exceptions=True)
        elapsed = loop.time() - t0
        assert outcome == {"quick": "done", "slow": "timed out", "other": "cancelled elsewhere"}
        assert 0.2 <= elapsed < 0.2 + 0.05 + 0.2, elapsed  # within one tick (+ slack)
        assert not d.active and not d.expired
        await asyncio.sleep(0.12)
        assert not d.sweeping  # nothing in flight: the sweep has stopped

    asyncio.run(main())
