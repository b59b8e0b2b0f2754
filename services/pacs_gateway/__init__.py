"""The pacs_gateway service (to be built out by its issue)."""

from __future__ import annotations

from ..core.runtime import Runtime


class _Service:
    name = "pacs_gateway"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def build(rt: Runtime) -> _Service:
    return _Service(rt)
