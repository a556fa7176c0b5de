"""Media files for the SIP test peers: PCMU/RTP pcaps for sipp, and WAVs for sipp and baresip.

Independent of kombain's own codecs on purpose (G.711 mu-law is done here with numpy), so the
peer cannot share a bug with the server it tests.

How sipp 3.6 uses these files (src/prepare_pcap.c, src/send_packets.c):

* `<exec play_pcap_audio="file"/>` opens the pcap with libpcap (link type Ethernet or Linux
  cooked), keeps only IPv4/IPv6 UDP packets and stores each UDP header + payload. It sends them
  through a *raw* socket (root or CAP_NET_RAW), rewriting only the UDP ports: the source port
  becomes sipp's `-mp` port and the destination port the far end's SDP media port (both shifted
  by the packet's destination port minus the lowest destination port in the file). The RTP
  header (SSRC, sequence number, timestamp, marker, payload type) goes out exactly as written
  here: sipp does not re-stamp it. Packets are paced by the pcap record timestamps, the first
  leaving at once. The play runs in the background: the scenario needs a `<pause/>` as long as
  the audio.
* `<exec rtp_stream="file,loops,payload_type"/>` (sipp 3.6.1, checked against it) sends the
  file's bytes as they are, 160 per 20 ms packet for PT 0: it does NOT skip a WAV header (the
  44 header bytes go out as the first audio), so the file must be headerless mu-law
  (`write_rtp_stream_raw`). Its file name cannot be a `[key]` (sipp 3.6.1: "Cannot read/cache
  rtpstream file [key]"), only a literal path in the XML, and it sets no marker bit. That is
  why the scenarios use play_pcap_audio: parameterised with -key, exact RTP headers, and the
  same mechanism plays DTMF.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 8000
PTIME_MS = 20
SAMPLES_PER_PACKET = RATE * PTIME_MS // 1000  # 160
PT_PCMU = 0
PT_PCMA = 8
PT_TELEPHONE_EVENT = 101
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}

# A fixed capture start, so the same input always gives the same file.
PCAP_EPOCH_S = 1_700_000_000
DEFAULT_SRC = ("127.0.0.1", 40000)
DEFAULT_DST = ("127.0.0.1", 40002)

_BIAS = 0x84
_CLIP14 = 8159


# --- G.711 mu-law -----------------------------------------------------------------------------

def mulaw_encode(samples: np.ndarray) -> bytes:
    """int16 PCM -> G.711 mu-law bytes (as the reference Sun/ITU g711.c linear2ulaw)."""
    x = np.asarray(samples, dtype=np.int32) >> 2  # 14-bit, rounding toward -inf as in C
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _CLIP14) + (_BIAS >> 2)  # 33 .. 8192
    seg = np.floor(np.log2(mag)).astype(np.int32) - 5  # 0 .. 8; 8 only for the clipped top
    out = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return ((out ^ mask) & 0xFF).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes -> int16 PCM."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 PCM -> G.711 A-law bytes (as the reference g711.c linear2alaw)."""
    x = np.asarray(samples, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    out = np.where(seg >= 8, 0x7F,
                   (np.minimum(seg, 7) << 4) | ((mag >> np.maximum(np.minimum(seg, 7), 1)) & 0x0F))
    return ((out ^ mask) & 0xFF).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    """G.711 A-law bytes -> int16 PCM."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def g711_decode(payload: bytes, pt: int) -> np.ndarray:
    """Decode a PCMU (PT 0) or PCMA (PT 8) payload."""
    if pt == PT_PCMU:
        return mulaw_decode(payload)
    if pt == PT_PCMA:
        return alaw_decode(payload)
    raise ValueError(f"not a G.711 payload type: {pt}")


# --- WAV in and out ---------------------------------------------------------------------------

def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """(int16 mono samples, sample rate) of a 16-bit PCM WAV; stereo is averaged to mono."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported, not {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data.astype(np.int16), rate


def resample(samples: np.ndarray, rate: int, to_rate: int = RATE) -> np.ndarray:
    """Windowed-sinc low-pass then linear interpolation: plenty for speech into G.711."""
    x = np.asarray(samples, dtype=np.float64)
    if rate == to_rate or len(x) == 0:
        return np.asarray(samples, dtype=np.int16)
    if to_rate < rate:
        cutoff = 0.45 * to_rate / rate  # cycles per input sample, a little under Nyquist
        n = np.arange(-32, 33)
        taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(len(n))
        x = np.convolve(x, taps / taps.sum(), mode="same")
    out_len = int(round(len(x) * to_rate / rate))
    t = np.arange(out_len) * (rate / to_rate)
    y = np.interp(t, np.arange(len(x)), x)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def load_speech_8k(path: Path | str) -> np.ndarray:
    """A speech WAV (any rate, 16-bit) as int16 8 kHz mono."""
    samples, rate = read_wav(path)
    return resample(samples, rate, RATE)


def write_wav_pcm16(path: Path | str, samples: np.ndarray, rate: int = RATE) -> Path:
    """16-bit mono PCM WAV: what baresip's aufile module reads (audio_source) and writes."""
    path = Path(path)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def write_rtp_stream_raw(path: Path | str, samples: np.ndarray) -> Path:
    """Headerless 8 kHz G.711 mu-law bytes: what sipp 3.6.1's `rtp_stream="path,1,0"` plays
    correctly (it sends a file's bytes verbatim, a WAV header included)."""
    path = Path(path)
    path.write_bytes(mulaw_encode(samples))
    return path


def write_wav_pcmu(path: Path | str, samples: np.ndarray) -> Path:
    """8 kHz mono G.711 mu-law WAV (format tag 7, canonical 44-byte header).

    For tools that read mu-law WAVs. Not for sipp 3.6.1's rtp_stream, which would send the
    header as audio: use write_rtp_stream_raw.
    """
    path = Path(path)
    data = mulaw_encode(samples)
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 7, 1, RATE, RATE, 1, 8)
    header += b"data" + struct.pack("<I", len(data))
    path.write_bytes(header + data)
    return path


# --- RTP -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RtpHeader:
    version: int
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | (pt & 0x7F), seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc & 0xFFFFFFFF) + payload


def parse_rtp(data: bytes) -> RtpHeader:
    if len(data) < 12:
        raise ValueError(f"RTP packet too short: {len(data)} bytes")
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        (ext_words,) = struct.unpack("!H", data[offset + 2:offset + 4])
        offset += 4 + 4 * ext_words
    payload = data[offset:]
    if b0 & 0x20 and payload:  # padding
        payload = payload[: -payload[-1]]
    return RtpHeader(b0 >> 6, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, payload)


@dataclass(frozen=True)
class TimedPacket:
    t: float  # seconds from the start of the capture
    data: bytes  # the UDP payload (an RTP packet)


def pcmu_packets(samples: np.ndarray, *, ssrc: int = 0x4B4F4D42, seq0: int = 1, ts0: int = 0,
                 t0: float = 0.0, pt: int = PT_PCMU) -> list[TimedPacket]:
    """20 ms G.711 RTP packets of int16 8 kHz audio (the last one padded with silence).

    PCMU by default; pt=8 encodes A-law instead.
    """
    x = np.asarray(samples, dtype=np.int16)
    n = max(1, math.ceil(len(x) / SAMPLES_PER_PACKET))
    x = np.concatenate([x, np.zeros(n * SAMPLES_PER_PACKET - len(x), dtype=np.int16)])
    payload = alaw_encode(x) if pt == PT_PCMA else mulaw_encode(x)
    out = []
    for i in range(n):
        chunk = payload[i * SAMPLES_PER_PACKET:(i + 1) * SAMPLES_PER_PACKET]
        out.append(TimedPacket(t0 + i * PTIME_MS / 1000,
                               rtp_packet(pt, seq0 + i, ts0 + i * SAMPLES_PER_PACKET, ssrc, chunk, i == 0)))
    return out


def dtmf_packets(digits: str, *, ssrc: int = 0x4B4F4D42, seq0: int = 1, ts0: int = 0, t0: float = 0.0,
                 tone_ms: int = 160, gap_ms: int = 100, volume: int = 10,
                 pt: int = PT_TELEPHONE_EVENT) -> list[TimedPacket]:
    """RFC 4733 telephone-event packets for a digit string.

    Each digit is one event: an update every 20 ms with the event's start timestamp and the
    duration so far (the first with the marker bit), the last (E bit, full duration) sent three
    times 20 ms apart; every packet has the next sequence number. The next digit starts
    `gap_ms` after the previous tone ended.
    """
    out: list[TimedPacket] = []
    seq = seq0
    n = max(1, tone_ms // PTIME_MS)
    for i, ch in enumerate(digits.upper()):
        if ch not in DTMF_EVENTS:
            raise ValueError(f"not a DTMF digit: {ch!r}")
        start_ms = i * (tone_ms + gap_ms)
        ts = ts0 + start_ms * RATE // 1000
        for k in range(1, n + 3):
            end = k >= n
            duration = min(k, n) * SAMPLES_PER_PACKET
            payload = struct.pack("!BBH", DTMF_EVENTS[ch], (0x80 if end else 0) | (volume & 0x3F), duration)
            out.append(TimedPacket(t0 + (start_ms + k * PTIME_MS) / 1000,
                                   rtp_packet(pt, seq, ts, ssrc, payload, marker=(k == 1))))
            seq += 1
    return out


# --- pcap (libpcap, Ethernet / IPv4 / UDP) -----------------------------------------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _frame(payload: bytes, src: tuple[str, int], dst: tuple[str, int], ident: int) -> bytes:
    src_ip, dst_ip = bytes(map(int, src[0].split("."))), bytes(map(int, dst[0].split(".")))
    udp_len = 8 + len(payload)
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, 17, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ether = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ether + ip + udp


def write_pcap(path: Path | str, packets: list[TimedPacket], *, src: tuple[str, int] = DEFAULT_SRC,
               dst: tuple[str, int] = DEFAULT_DST) -> Path:
    """A libpcap file (microsecond timestamps, link type Ethernet) of UDP datagrams."""
    path = Path(path)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, p in enumerate(packets):
        frame = _frame(p.data, src, dst, i + 1)
        usec = int(round(p.t * 1_000_000))
        out.append(struct.pack("<IIII", PCAP_EPOCH_S + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


@dataclass(frozen=True)
class PcapPacket:
    t: float  # seconds since the first record
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    udp_checksum_ok: bool
    ip_checksum_ok: bool


def read_pcap(path: Path | str) -> list[PcapPacket]:
    """A small libpcap reader (Ethernet, IPv4, UDP only): enough to check what write_pcap made."""
    data = Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0xA1B2C3D4:
        endian = "<"
    elif magic == 0xD4C3B2A1:
        endian = ">"
    else:
        raise ValueError(f"not a microsecond libpcap file: magic {magic:#x}")
    _, vmaj, vmin, _, _, _, linktype = struct.unpack(endian + "IHHiIII", data[:24])
    if (vmaj, vmin) != (2, 4) or linktype != 1:
        raise ValueError(f"unsupported pcap version {vmaj}.{vmin} or link type {linktype}")
    out: list[PcapPacket] = []
    pos, first = 24, None
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if incl != orig or len(frame) != incl:
            raise ValueError("truncated packet in pcap")
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        total = struct.unpack("!H", ip[2:4])[0]
        udp = ip[ihl:total]
        sport, dport, ulen, _ = struct.unpack("!HHHH", udp[:8])
        if ulen != len(udp):
            raise ValueError(f"UDP length {ulen} != {len(udp)}")
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, ulen)
        t = sec + usec / 1e6
        first = t if first is None else first
        out.append(PcapPacket(round(t - first, 6), (".".join(map(str, ip[12:16])), sport),
                              (".".join(map(str, ip[16:20])), dport), udp[8:],
                              _checksum(pseudo + udp) == 0, _checksum(ip[:ihl]) == 0))
    return out


# --- the files the scenarios play ------------------------------------------------------------

def write_speech_pcap(path: Path | str, wav: Path | str | np.ndarray, *, lead_ms: int = 0,
                      trail_ms: int = 0, ssrc: int = 0x4B4F4D42, seq0: int = 1, ts0: int = 0,
                      pt: int = PT_PCMU) -> Path:
    """A speech WAV (any rate; or int16 8 kHz samples) as a PCMU (or pt=8 PCMA) RTP pcap.

    lead_ms / trail_ms add mu-law silence before / after the speech (a VAD needs trailing
    silence to decide the caller stopped talking).
    """
    samples = wav if isinstance(wav, np.ndarray) else load_speech_8k(wav)
    lead = np.zeros(lead_ms * RATE // 1000, dtype=np.int16)
    trail = np.zeros(trail_ms * RATE // 1000, dtype=np.int16)
    audio = np.concatenate([lead, np.asarray(samples, dtype=np.int16), trail])
    return write_pcap(path, pcmu_packets(audio, ssrc=ssrc, seq0=seq0, ts0=ts0, pt=pt))


def write_dtmf_pcap(path: Path | str, digits: str, *, tone_ms: int = 160, gap_ms: int = 100,
                    ssrc: int = 0x4B4F4D42, seq0: int = 30001, ts0: int = 8_000_000) -> Path:
    """RFC 4733 events (PT 101) for `digits` as a pcap for play_pcap_audio.

    The defaults keep the speech pcap's SSRC and jump its sequence number and timestamp well
    ahead, as a phone would after a pause; pass seq0/ts0 to continue a given stream exactly.
    """
    return write_pcap(path, dtmf_packets(digits, ssrc=ssrc, seq0=seq0, ts0=ts0, tone_ms=tone_ms, gap_ms=gap_ms))


def call_packets(total_s: float, *, speech: Sequence[tuple[float, np.ndarray]] = (),
                 keys: Sequence[tuple[float, str]] = (), tone_ms: int = 160,
                 ssrc: int = 0x4B4F4D42, volume: int = 10) -> list[TimedPacket]:
    """One phone's outgoing stream, as a phone sends it: a 20 ms PCMU packet every 20 ms for
    `total_s` (silence, or the int16 8 kHz `speech` clips placed at their start times), except
    while a key is pressed: then RFC 4733 events for it (`keys`: (start time, digit)), updates
    every 20 ms and the end packet three times, in place of the audio. One SSRC, one sequence."""
    slots = int(round(total_s * 1000 / PTIME_MS))
    audio = np.zeros(slots * SAMPLES_PER_PACKET, dtype=np.int16)
    for t, clip in speech:
        at = int(round(t * RATE))
        clip = np.asarray(clip, dtype=np.int16)[: max(0, len(audio) - at)]
        audio[at:at + len(clip)] = clip
    n = max(1, tone_ms // PTIME_MS)
    events: dict[int, tuple[int, int, int]] = {}  # slot -> (event, k, start slot)
    for t, ch in keys:
        if ch.upper() not in DTMF_EVENTS:
            raise ValueError(f"not a DTMF digit: {ch!r}")
        first = int(round(t * 1000 / PTIME_MS))
        for k in range(1, n + 3):
            events[first + k - 1] = (DTMF_EVENTS[ch.upper()], k, first)
    payload = mulaw_encode(audio)
    out: list[TimedPacket] = []
    marker = True
    for i in range(slots):
        seq = 1 + i
        if i in events:
            ev, k, first = events[i]
            body = struct.pack("!BBH", ev, (0x80 if k >= n else 0) | (volume & 0x3F), min(k, n) * SAMPLES_PER_PACKET)
            pkt = rtp_packet(PT_TELEPHONE_EVENT, seq, first * SAMPLES_PER_PACKET, ssrc, body, marker=(k == 1))
            marker = True  # audio after an event starts a new talkspurt
        else:
            chunk = payload[i * SAMPLES_PER_PACKET:(i + 1) * SAMPLES_PER_PACKET]
            pkt = rtp_packet(PT_PCMU, seq, i * SAMPLES_PER_PACKET, ssrc, chunk, marker)
            marker = False
        out.append(TimedPacket(i * PTIME_MS / 1000, pkt))
    return out


def pcap_duration_s(path: Path | str) -> float:
    """Seconds from the first packet to the end of the last one (for the scenario's pause)."""
    pkts = read_pcap(path)
    return pkts[-1].t + PTIME_MS / 1000 if pkts else 0.0
