"""A caller that connects and then just waits, to be killed (-9) without hanging up."""

from __future__ import annotations

import asyncio
import sys

from kombain.clients.webrtc_client import WebRTCCaller


async def main(url: str) -> None:
    caller = WebRTCCaller(url, hosts=("127.0.0.1",))
    await caller.connect()
    print("connected", caller.result.call_id, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
