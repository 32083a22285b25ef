import pytest
import trio

from amp_runtime.core.actor import Actor, RestartBudgetExceeded, supervise


class Counter(Actor):
    """Counts; crashes on "boom". Its `starts` show restarts."""

    def __init__(self):
        super().__init__("counter", mailbox_size=8)
        self.count = 0
        self.starts = 0

    async def on_start(self):
        self.starts += 1

    async def handle(self, msg, reply):
        if msg == "boom":
            raise RuntimeError("boom")
        self.count += 1
        if reply is not None:
            reply.set(self.count)


async def test_ask_and_tell(nursery):
    actor = Counter()
    await nursery.start(supervise, actor)
    await actor.tell("x")
    assert await actor.ask("x") == 2


async def test_crashing_actor_is_restarted_and_asker_sees_the_error(nursery, caplog):
    actor = Counter()
    await nursery.start(supervise, actor)
    with pytest.raises(RuntimeError, match="boom"):
        await actor.ask("boom")
    assert await actor.ask("x") == 1  # answered by the restarted actor
    assert actor.starts == 2
    assert any("actor counter crashed" in r.getMessage() for r in caplog.records)


async def test_restart_budget_exceeded_fails_loudly():
    actor = Counter()
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervise(actor, max_restarts_per_minute=2, task_status=task_status))
            for _ in range(3):
                await actor.tell("boom")
    assert caught.group_contains(RestartBudgetExceeded)


async def test_ask_times_out_when_the_actor_never_answers(nursery):
    class Silent(Actor):
        async def handle(self, msg, reply):
            pass

    actor = Silent("silent")
    await nursery.start(supervise, actor)
    with pytest.raises(trio.TooSlowError):
        await actor.ask("anything", timeout=0.05)


async def test_closed_mailbox_drains_then_run_returns():
    actor = Counter()
    for _ in range(3):
        await actor.tell("x")
    actor.close()
    with trio.fail_after(5):
        await supervise(actor)
    assert actor.count == 3
