import asyncio
import bisect
import random

import pytest

from tasks.call.pacing import Limiter


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    async def sleep(self, s):
        self.sleeps.append(round(s, 6))
        self.now += s


def waits(lim, n, tokens=1):
    """Book n requests at a frozen clock; the wait of each."""
    return [round(lim.reserve(tokens).start - lim._clock(), 6) for _ in range(n)]


def run_at_starts(lim, clock, sizes, correct=None):
    """Book one request per size, all waiting from the start, the clock moving to each start as the pacing
    sleep would; the tickets."""
    tickets = []
    for size in sizes:
        t = lim.reserve(size, waiting_since=0.0)
        clock.now = max(clock.now, t.start)
        if correct:
            lim.correct(t, correct(size))
        tickets.append(t)
    return tickets


def max_in_any_window(starts, weights, span=60.0):
    """The largest sum of weights over starts in any half-open window (s - span, s]."""
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    xs = [starts[i] for i in order]
    ws = [weights[i] for i in order]
    best = 0
    for j, s in enumerate(xs):
        i = bisect.bisect_right(xs, s - span + 1e-9)
        best = max(best, sum(ws[i:j + 1]))
    return best


def test_rpm_paces_evenly_from_the_first_request_without_burst():
    c = FakeClock()
    lim = Limiter(rpm=600, clock=c, sleep=c.sleep)
    assert waits(lim, 4) == [0.0, 0.1, 0.2, 0.3]


def test_smooth_window_margin_shifts_the_second_minute_once():
    c = FakeClock()
    lim = Limiter(rpm=600, margin_s=0.25, clock=c, sleep=c.sleep)
    starts = [round(t.start, 6) for t in run_at_starts(lim, c, [1] * 1300)]
    assert starts[599] == 59.9
    assert starts[600] == 60.25          # 600 started since 0.0: waits for the first to leave 60 s + margin
    assert starts[601] == 60.35          # then even pacing again
    assert starts[1200] == 120.5
    assert (1199 - 600) / (starts[1199] - starts[600]) == pytest.approx(10.0)  # full rate between the shifts


def test_sliding_window_spends_the_first_allowance_at_once():
    c = FakeClock()
    lim = Limiter(rpm=100, window="sliding", margin_s=0.5, clock=c, sleep=c.sleep)
    assert set(waits(lim, 100)) == {0.0}
    assert waits(lim, 2) == [60.5, 60.5]    # the 101st waits for the first to leave the window


@pytest.mark.parametrize("window", ["smooth", "sliding"])
def test_never_more_than_the_limits_in_any_window(window):
    c = FakeClock()
    rng = random.Random(4)
    lim = Limiter(rpm=120, tpm=40_000, window=window, margin_s=0.0, clock=c, sleep=c.sleep)
    sizes = [rng.randint(50, 900) for _ in range(1500)]
    tickets = run_at_starts(lim, c, sizes, correct=lambda n: int(n * rng.uniform(0.7, 1.3)))
    starts = [t.start for t in tickets]
    assert max_in_any_window(starts, [1] * len(starts)) <= 120
    # each start fits its estimate next to the reported usage of the ones before it
    for j, t in enumerate(tickets):
        i = bisect.bisect_right(starts, t.start - 60 + 1e-9)
        assert sum(x.tokens for x in tickets[i:j]) + sizes[j] <= 40_000
    minutes = (starts[-1] - starts[0]) / 60
    assert sum(t.tokens for t in tickets[:-1]) / minutes > 0.98 * 40_000   # tpm binds here, at 98 % or more


def test_tpm_charges_estimates_and_corrections():
    c = FakeClock()
    lim = Limiter(tpm=6000, clock=c, sleep=c.sleep)  # 100 tokens/s
    first = lim.reserve(100)
    assert first.start == 0.0
    second = lim.reserve(300)
    assert second.start == 1.0               # waits for the first 100 tokens
    lim.correct(second, 500)                 # the answer reported 200 more than estimated
    assert lim.reserve(1).start == 6.0       # 100 + 500 tokens booked before it
    c.now = 10.0
    assert lim.reserve(1).start == 10.0      # idle time is not banked into a burst


def test_rpm_and_tpm_together_take_the_later_start():
    c = FakeClock()
    lim = Limiter(rpm=60, tpm=600, clock=c, sleep=c.sleep)
    assert waits(lim, 1, 10) == [0.0]
    assert waits(lim, 1, 10) == [1.0]        # rpm (1 s) and tpm (10 tokens = 1 s) agree
    assert waits(lim, 1, 50) == [2.0]
    assert waits(lim, 1, 1) == [7.0]         # the 50 tokens took 5 s of tpm


def test_pause_holds_every_start_then_ramps_back_from_half_rate():
    c = FakeClock()
    lim = Limiter(rpm=600, ramp_s=10, clock=c, sleep=c.sleep)
    lim.pause(5)
    starts = [t.start for t in run_at_starts(lim, c, [1] * 200)]
    assert starts[0] == 5.0
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[0] == pytest.approx(0.2)     # half the rate right after the pause
    assert 0.1 < gaps[40] < 0.2              # climbing back
    assert gaps[-1] == pytest.approx(0.1)    # full rate after ramp_s
    assert lim.rate_factor(5.0) == 0.5 and lim.rate_factor(10.0) == 0.75 and lim.rate_factor(15.0) == 1.0


def test_a_later_pause_wins_an_earlier_one_does_not_shorten_it():
    c = FakeClock()
    lim = Limiter(rpm=6000, ramp_s=0, clock=c, sleep=c.sleep)
    lim.pause(5)
    lim.pause(2)
    assert lim.reserve(1).start == 5.0


def test_headers_without_a_limit_hold_until_the_reset():
    c = FakeClock()
    lim = Limiter(clock=c, sleep=c.sleep)     # no configured rates at all
    t = lim.reserve(1)
    c.now = 1.0
    lim.observe(t, "requests", remaining=2, reset_s=30)
    assert waits(lim, 3) == [0.0, 0.0, 30.0]  # two more fit; the third waits for the reset
    c.now = 40.0
    assert waits(lim, 1) == [0.0]             # the observation expired


def test_headers_with_a_limit_refill_at_the_providers_rate():
    c = FakeClock()
    lim = Limiter(clock=c, sleep=c.sleep)
    t = lim.reserve(1)
    c.now = 0.5
    lim.observe(t, "requests", remaining=0, reset_s=60, limit=60)  # bucket empty, refilling 1/s from t's start
    assert waits(lim, 3) == [0.5, 1.5, 2.5]


def test_headers_count_what_was_sent_after_the_observed_request():
    c = FakeClock()
    lim = Limiter(clock=c, sleep=c.sleep)
    observed = lim.reserve(1)
    for _ in range(4):
        lim.reserve(1)                        # four more left before the first one's answer came back
    lim.observe(observed, "requests", remaining=5, reset_s=60)
    assert waits(lim, 2) == [0.0, 60.0]       # one more of the five fits; the next waits for the reset


def test_token_headers_steer_by_tokens():
    c = FakeClock()
    lim = Limiter(clock=c, sleep=c.sleep)
    t = lim.reserve(1000)
    lim.observe(t, "tokens", remaining=500, reset_s=10, limit=10_500)  # refill 1,000 tokens/s
    assert lim.reserve(400).start == 0.0
    assert lim.reserve(600).start == pytest.approx(0.5)


def test_an_older_observation_does_not_replace_a_newer_one():
    c = FakeClock()
    lim = Limiter(clock=c, sleep=c.sleep)
    old, new = lim.reserve(1), None
    c.now = 1.0
    new = lim.reserve(1)
    lim.observe(new, "requests", remaining=100, reset_s=60)
    lim.observe(old, "requests", remaining=0, reset_s=60)
    assert waits(lim, 1) == [0.0]


def test_concurrency_slots_and_sleeps():
    c = FakeClock()
    lim = Limiter(rpm=120, concurrency=2, clock=c, sleep=c.sleep)
    active, peak = 0, 0

    async def one():
        nonlocal active, peak
        async with lim.slot(1):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0)
            active -= 1

    async def main():
        await asyncio.gather(*(one() for _ in range(5)))

    asyncio.run(main())
    assert peak <= 2
    assert c.now == 2.0 and sum(c.sleeps) == 2.0  # 5 starts at 0.5 s spacing: the last at 2.0 s


def test_a_pause_during_the_wait_books_the_start_again_after_it():
    c = FakeClock()
    lim = Limiter(rpm=60, ramp_s=0, clock=c, sleep=c.sleep)
    starts = []

    paused = []

    async def sleep(s):
        c.now += s
        if len(starts) == 1 and not paused:
            paused.append(lim.pause(10))      # a 429 arrives while the second request waits its turn
        await asyncio.sleep(0)

    lim._sleep = sleep

    async def main():
        for _ in range(3):
            async with lim.slot(1) as ticket:
                starts.append(ticket.start)

    asyncio.run(main())
    assert starts == [0.0, 11.0, 12.0]        # not 1.0: the pause from 1.0 to 11.0 came first
    assert lim._requests_total == 3           # the cancelled booking was taken back


def test_rejects_an_unknown_window():
    with pytest.raises(ValueError, match="smooth"):
        Limiter(window="fixed")


def test_sliding_window_frees_a_slot_a_minute_after_the_answer():
    c = FakeClock()
    lim = Limiter(rpm=3, window="sliding", margin_s=0.5, clock=c, sleep=c.sleep)
    tickets = [lim.reserve(1) for _ in range(3)]      # the first minute's allowance at once
    for t, answered in zip(tickets, (0.5, 2.0, 1.0), strict=True):  # the provider counted each before its answer came
        t.end = answered
    c.now = 3.0
    assert [lim.reserve(1).start for _ in range(3)] == [61.0, 62.5, 62.5]


def test_smooth_window_counts_from_the_start():
    c = FakeClock()
    lim = Limiter(rpm=2, margin_s=0.5, clock=c, sleep=c.sleep)
    for t in run_at_starts(lim, c, [1, 1]):
        t.end = t.start + 5.0                        # evenly spaced starts: their answers do not matter
    assert lim.reserve(1).start == 60.5


def test_slot_records_when_the_answer_came():
    c = FakeClock()
    lim = Limiter(rpm=60, window="sliding", clock=c, sleep=c.sleep)

    async def main():
        async with lim.slot(1) as ticket:
            c.now += 1.5                              # the request takes 1.5 s
        return ticket

    ticket = asyncio.run(main())
    assert (ticket.start, ticket.end) == (0.0, 1.5)


def test_headers_that_agree_with_our_own_window_do_not_slow_a_sliding_window():
    c = FakeClock()
    lim = Limiter(rpm=4, window="sliding", margin_s=0.0, clock=c, sleep=c.sleep)
    tickets = [lim.reserve(1) for _ in range(4)]           # the first minute's allowance at once
    for t in tickets:
        t.end = 1.0
    c.now = 1.0
    lim.observe(tickets[-1], "requests", remaining=0, reset_s=60, limit=4)  # only our four count: nothing new
    assert [lim.reserve(1).start for _ in range(4)] == [61.0] * 4          # not a refill of 1 per 15 s


def test_headers_that_show_someone_else_using_the_limit_slow_us_down():
    c = FakeClock()
    lim = Limiter(rpm=600, clock=c, sleep=c.sleep)                # our own pace: one per 0.1 s
    t = lim.reserve(1)
    lim.observe(t, "requests", remaining=0, reset_s=60, limit=60)  # 60 used, one of them ours
    assert lim.reserve(1).start == pytest.approx(1.0)             # refilling 1/s from t's start
