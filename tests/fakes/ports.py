"""A recording output port on the real `MarkedOutput` base: what a transport would put on its wire."""

from __future__ import annotations

from kombain.server.transports.link import SlowPeer
from kombain.streaming.output import MarkedOutput


class RecordingPort(MarkedOutput):
    """Records frames, marks, pauses and clears; `echo()` plays the peer echoing every mark.
    With `capacity`, more sends than that raise `SlowPeer` (a peer that stopped reading)."""

    can_pause = True

    def __init__(self, rate: int = 8000, capacity: int | None = None) -> None:
        super().__init__(rate, None)
        self.capacity = capacity
        self.sent: list[tuple[str, object]] = []

    def _put(self, item: tuple[str, object]) -> None:
        if self.capacity is not None and len(self.sent) >= self.capacity:
            raise SlowPeer("the peer is not reading")
        self.sent.append(item)

    def send_frame(self, pcm: bytes) -> None:
        self._put(("frame", len(pcm)))

    def send_mark(self, name: str) -> None:
        self._put(("mark", name))

    def send_pause(self, held: bool) -> None:
        self._put(("pause", held))

    def send_clear(self) -> None:
        self._put(("clear", None))

    def echo(self) -> None:
        """The peer has played everything sent: echo the marks."""
        for op, name in list(self.sent):
            if op == "mark":
                self.mark_played(str(name))
