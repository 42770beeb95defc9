"""The load generator: simulated users walking through the shop's frontend.

Journeys start at a steady rate (``--rate`` per second, 0 disables): every journey views the
home page and a product; ``CHECKOUT_SHARE`` of them also add to the cart and check out. At most
``MAX_IN_FLIGHT`` journeys run at once; journeys that would exceed it are skipped and counted,
so an overloaded shop is not buried under an ever-growing queue.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import httpx

# Half the journeys check out: the checkout path (checkout, payment, fraud-detection, shipping,
# quote, email, orders) then sees ~5 requests/s at the demo's 10 journeys/s, enough that a
# fault there is named in about as few seconds as one on the busier browse path. At 0.2 it saw
# 2/s and an error fault at shipping took 7 s to gather the 3 errors a root cause needs.
CHECKOUT_SHARE = 0.5
MAX_IN_FLIGHT = 64
PRODUCT_IDS = 20
REQUEST_TIMEOUT_S = 10.0


@dataclass(slots=True)
class LoadStats:
    journeys: int = 0
    requests: int = 0
    failed_requests: int = 0
    skipped_journeys: int = 0


class LoadGenerator:
    def __init__(self, frontend_url: str, rate: float, rng: random.Random | None = None) -> None:
        self.frontend_url = frontend_url.rstrip("/")
        self.rate = rate
        self.rng = rng or random.Random()
        self.stats = LoadStats()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Start journeys until ``stop`` is set, then wait for those in flight."""
        if self.rate <= 0:
            return
        async with httpx.AsyncClient(trust_env=False, timeout=REQUEST_TIMEOUT_S) as client:
            interval = 1.0 / self.rate
            while not stop.is_set():
                if len(self._tasks) >= MAX_IN_FLIGHT:
                    self.stats.skipped_journeys += 1
                else:
                    task = asyncio.create_task(self._journey(client))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                # Exponential gaps: arrivals like independent users, same mean rate.
                gap = self.rng.expovariate(1.0 / interval)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=gap)
                except TimeoutError:
                    pass
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _journey(self, client: httpx.AsyncClient) -> None:
        self.stats.journeys += 1
        product = self.rng.randrange(1, PRODUCT_IDS + 1)
        await self._request(client, "GET", "/")
        await self._request(client, "GET", f"/product/{product}")
        if self.rng.random() < CHECKOUT_SHARE:
            await self._request(client, "POST", "/cart")
            await self._request(client, "POST", "/checkout")

    async def _request(self, client: httpx.AsyncClient, method: str, path: str) -> None:
        self.stats.requests += 1
        try:
            response = await client.request(method, self.frontend_url + path)
            if response.status_code >= 500:
                self.stats.failed_requests += 1
        except httpx.HTTPError:
            self.stats.failed_requests += 1
