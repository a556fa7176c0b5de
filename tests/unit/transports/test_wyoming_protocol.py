"""Wyoming framing, limits, audio formats and the zeroconf decision, sans I/O: the bytes the
`wyoming` library writes are read back, ours read by the library."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from wyoming.audio import AudioChunk
from wyoming.event import Event as LibEvent
from wyoming.event import async_read_event, async_write_event
from wyoming.tts import Synthesize, SynthesizeVoice

from kombain.server.transports.wyoming.protocol import (
    AudioFormat,
    BadEvent,
    FramingError,
    Limits,
    WyomingProtocol,
    audio_format,
    encode,
    voice_choice,
)
from kombain.server.transports.wyoming.zeroconf_ad import should_advertise


class _Sink:
    """A StreamWriter stand-in that keeps what the library writes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> None:
        self.data += b

    def writelines(self, parts) -> None:
        for p in parts:
            self.data += p

    async def drain(self) -> None:
        pass


def _library_bytes(event: LibEvent) -> bytes:
    sink = _Sink()
    asyncio.run(async_write_event(event, sink))  # type: ignore[arg-type]
    return bytes(sink.data)


def test_reads_what_the_library_writes_in_any_split():
    pcm = np.arange(-400, 400, dtype="<i2").tobytes()
    wire = (_library_bytes(Synthesize(text="Hello there.", voice=SynthesizeVoice(name="joe")).event())
            + _library_bytes(AudioChunk(rate=22050, width=2, channels=1, audio=pcm).event()))
    for step in (1, 7, 64, len(wire)):
        proto = WyomingProtocol()
        events = [ev for i in range(0, len(wire), step) for ev in proto.feed(wire[i:i + step])]
        assert [e.type for e in events] == ["synthesize", "audio-chunk"]
        assert events[0].data["text"] == "Hello there." and voice_choice(events[0]).name == "joe"
        assert events[1].payload == pcm and audio_format(events[1].data) == AudioFormat(22050, 2, 1)


def test_the_library_reads_what_we_write():
    async def read(data: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [await async_read_event(reader), await async_read_event(reader)]

    wire = encode("transcript", {"text": "héllo"}) + encode("audio-chunk", {"rate": 16000, "width": 2,
                                                                            "channels": 1}, b"\x01\x00")
    first, second = asyncio.run(read(wire))
    assert first.type == "transcript" and first.data == {"text": "héllo"}
    assert second.payload == b"\x01\x00" and second.data["rate"] == 16000


def test_inline_data_and_a_data_section_merge():
    section = b'{"name":"tiny.en"}'
    header = json.dumps({"type": "transcribe", "data": {"language": "en"}, "data_length": len(section)}).encode()
    proto = WyomingProtocol()
    assert proto.feed(header + b"\n" + section[:5]) == []  # waits for the whole section
    (ev,) = proto.feed(section[5:])
    assert ev.data == {"language": "en", "name": "tiny.en"}


@pytest.mark.parametrize("wire, code", [
    (b"not json\n", "bad_frame"),
    (b"[1, 2]\n", "bad_frame"),
    (b'{"data": {}}\n', "bad_frame"),
    (b'{"type": "x", "payload_length": -1}\n', "bad_frame"),
    (b'{"type": "x", "payload_length": "12"}\n', "bad_frame"),
    (b'{"type": "x", "payload_length": true}\n', "bad_frame"),
    (b'{"type": "x", "data": [1]}\n', "bad_frame"),
    (b'{"type": "x", "payload_length": 2000000}\n', "frame_too_large"),
    (b'{"type": "x", "data_length": 300000}\n', "frame_too_large"),
    (b'{"type": "x", "data_length": 2}\n[]', "bad_frame"),
    (b"x" * 70_000, "frame_too_large"),
])
def test_broken_frames_are_refused(wire, code):
    with pytest.raises(FramingError) as err:
        WyomingProtocol().feed(wire)
    assert err.value.code == code


def test_a_payload_at_the_limit_is_taken():
    limits = Limits(payload=8)
    events = WyomingProtocol(limits).feed(encode("audio-chunk", {"rate": 8000, "width": 2, "channels": 1},
                                                 b"\x00" * 8))
    assert len(events[0].payload) == 8
    with pytest.raises(FramingError):
        WyomingProtocol(limits).feed(encode("audio-chunk", None, b"\x00" * 9))


@pytest.mark.parametrize("data", [
    {}, {"rate": 16000, "width": 2}, {"rate": "16000", "width": 2, "channels": 1},
    {"rate": 0, "width": 2, "channels": 1}, {"rate": 16000, "width": 5, "channels": 1},
    {"rate": 16000, "width": 2, "channels": 0}, {"rate": 10**9, "width": 2, "channels": 1},
    {"rate": 16000.5, "width": 2, "channels": 1}, {"rate": True, "width": 2, "channels": 1},
])
def test_impossible_audio_formats(data):
    with pytest.raises(BadEvent):
        audio_format(data)


def test_widths_and_channels_decode_to_mono_float():
    ramp = np.linspace(-0.5, 0.5, 64, dtype=np.float32)
    i16 = (ramp * 32768).astype("<i2")
    stereo = np.stack([i16, i16], axis=1).tobytes()
    assert np.allclose(AudioFormat(16000, 2, 2).to_mono_float(stereo), ramp, atol=1e-4)
    i32 = (ramp.astype(np.float64) * 2**31).astype("<i4").tobytes()
    assert np.allclose(AudioFormat(16000, 4, 1).to_mono_float(i32), ramp, atol=1e-6)
    i24 = b"".join(int(v).to_bytes(3, "little", signed=True) for v in (ramp * 2**23).astype(np.int64))
    assert np.allclose(AudioFormat(16000, 3, 1).to_mono_float(i24), ramp, atol=1e-6)
    i8 = (ramp * 128).astype("<i1").tobytes()
    assert np.allclose(AudioFormat(16000, 1, 1).to_mono_float(i8), ramp, atol=1e-2)
    with pytest.raises(BadEvent):
        AudioFormat(16000, 2, 2).to_mono_float(b"\x00" * 6)  # one and a half frames


def test_zeroconf_off_on_loopback_on_elsewhere_and_settable():
    assert not should_advertise("auto", "127.0.0.1")
    assert not should_advertise("auto", "::1")
    assert not should_advertise("auto", "localhost")
    assert should_advertise("auto", "0.0.0.0")
    assert should_advertise("auto", "192.168.1.20")
    assert should_advertise("on", "127.0.0.1")
    assert not should_advertise("off", "0.0.0.0")
    with pytest.raises(ValueError):
        should_advertise("sometimes", "0.0.0.0")
