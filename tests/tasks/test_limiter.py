import asyncio

from tasks.limiter import Limiter


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    async def sleep(self, s):
        self.sleeps.append(round(s, 6))
        self.now += s


def test_rpm_paces_evenly_from_the_first_request_without_burst():
    c = FakeClock()
    lim = Limiter(rpm=600, clock=c, sleep=c.sleep)
    assert [round(lim.reserve(1), 6) for _ in range(4)] == [0.0, 0.1, 0.2, 0.3]


def test_tpm_charges_estimates_and_corrections():
    c = FakeClock()
    lim = Limiter(tpm=6000, clock=c, sleep=c.sleep)  # 100 tokens/s
    assert lim.reserve(100) == 0.0
    assert lim.reserve(300) == 1.0          # waits for the first 100 tokens
    lim.correct(300, 500)                    # the answer reported 200 more than estimated
    assert lim.reserve(1) == 6.0             # 100 + 500 tokens booked before it
    c.now = 10.0
    assert lim.reserve(1) == 0.0             # idle time is not banked into a burst


def test_rpm_and_tpm_together_take_the_later_start():
    c = FakeClock()
    lim = Limiter(rpm=60, tpm=600, clock=c, sleep=c.sleep)
    assert lim.reserve(10) == 0.0
    assert lim.reserve(10) == 1.0            # rpm (1 s) and tpm (10 tokens = 1 s) agree
    assert lim.reserve(50) == 2.0
    assert lim.reserve(1) == 7.0             # the 50 tokens took 5 s of tpm


def test_pause_holds_every_start():
    c = FakeClock()
    lim = Limiter(rpm=6000, clock=c, sleep=c.sleep)
    lim.pause(5)
    assert lim.reserve(1) == 5.0


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
