"""Seeded mutations of a valid WebRTC offer (aiortc's, with loopback candidates): truncations,
deleted and duplicated lines, garbled values, BUNDLE groups naming unknown mids, and bodies of
nothing but odd whitespace or control characters (tests/fuzz and the soak send them)."""

from __future__ import annotations

import random

OFFER = """v=0
o=- 4005621647 4005621647 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
m=audio 35736 UDP/TLS/RTP/SAVPF 96 9 0 8
c=IN IP4 127.0.0.1
a=sendrecv
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:0
a=msid:51aa1b5d-1c7d-4d57-96a6-bfb62bf1fa9f 6762cee8-95df-4a1d-a81f-dfd4e9c80d75
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc:2819288549 cname:9e27b825-152d-4bac-a222-7b32d965b27d
a=rtpmap:96 opus/48000/2
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 127.0.0.1 35736 typ host
a=end-of-candidates
a=ice-ufrag:Zo9N
a=ice-pwd:ykXFAIr0NvaTC9o2gJ7WEH
a=fingerprint:sha-256 62:74:EB:57:E0:60:97:08:D8:7D:3A:D4:3C:1E:07:37:D5:5F:84:56:93:BE:D9:6B:63:2C:ED:E1:96:C6:00:6D
a=setup:actpass
m=application 43944 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 127.0.0.1
a=mid:1
a=sctp-port:5000
a=max-message-size:262144
a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 127.0.0.1 43944 typ host
a=end-of-candidates
a=ice-ufrag:Zo9N
a=ice-pwd:ykXFAIr0NvaTC9o2gJ7WEH
a=fingerprint:sha-256 62:74:EB:57:E0:60:97:08:D8:7D:3A:D4:3C:1E:07:37:D5:5F:84:56:93:BE:D9:6B:63:2C:ED:E1:96:C6:00:6D
a=setup:actpass
""".replace("\n", "\r\n")

GARBLE = ("", "nan", "::::", "-1", "0", "99999999999999999999999", "\u00a0", "\u2028", "\x1e", "\x00",
          "ä", " ", "a" * 300, "1.5", "inf", "0x10", "-", "/", "IN IP4", "UDP/TLS/RTP/SAVPF")

# Named cases found by hand or by earlier runs: each once, besides the seeded ones.
NAMED = {
    "mid deleted": OFFER.replace("a=mid:0\r\n", ""),
    "mid nan": OFFER.replace("a=mid:0", "a=mid:nan"),
    "mid colons": OFFER.replace("a=mid:0", "a=mid::::"),
    "mids deleted": OFFER.replace("a=mid:0\r\n", "").replace("a=mid:1\r\n", ""),
    "bundle unknown mid": OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 7"),
    "bundle only unknown": OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE x"),
    "bundle empty": OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE"),
    "duplicate mid": OFFER.replace("a=mid:1", "a=mid:0"),
    "nbsp": "\u00a0",
    "line separator": "\u2028",
    "record separator": "\x1e",
    "nbsp lines": "\u00a0\r\n\u00a0\r\n",
    "no candidates port 0 audio": OFFER.replace("m=audio 35736", "m=audio 0"),
    "rtpmap garbled": OFFER.replace("a=rtpmap:96 opus/48000/2", "a=rtpmap:96 opus/nan/2"),
    "rtpmap pt huge": OFFER.replace("a=rtpmap:96 opus", "a=rtpmap:99999999999 opus"),
    "fingerprint garbled": OFFER.replace("a=fingerprint:sha-256 62", "a=fingerprint:sha-256"),
    "setup garbled": OFFER.replace("a=setup:actpass", "a=setup:nan"),
    "ssrc garbled": OFFER.replace("a=ssrc:2819288549", "a=ssrc:nan"),
    "candidate garbled": OFFER.replace("udp 2130706431 127.0.0.1 35736", "udp nan 127.0.0.1 x"),
    "c= garbled": OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4", 1),
    "m= short": OFFER.replace("m=audio 35736 UDP/TLS/RTP/SAVPF 96 9 0 8", "m=audio"),
    "m= port nan": OFFER.replace("m=audio 35736", "m=audio nan"),
    "sctp-port garbled": OFFER.replace("a=sctp-port:5000", "a=sctp-port:nan"),
    "max-message-size garbled": OFFER.replace("a=max-message-size:262144", "a=max-message-size:-1"),
    "extmap garbled": OFFER.replace("a=extmap:1 urn", "a=extmap:nan urn"),
    "rtcp garbled": OFFER.replace("a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp:nan"),
}


def mutate(rng: random.Random, offer: str = OFFER) -> tuple[str, str]:
    """One seeded mutation of `offer`: (what was done, the mutated text)."""
    lines = offer.split("\r\n")[:-1]
    kind = rng.choice(("truncate", "delete", "duplicate", "garble", "garble", "swap"))
    i = rng.randrange(len(lines))
    if kind == "truncate":
        cut = rng.randrange(1, len(offer))
        return f"truncate at {cut}", offer[:cut]
    if kind == "delete":
        return f"delete line {i}", "\r\n".join(lines[:i] + lines[i + 1 :]) + "\r\n"
    if kind == "duplicate":
        return f"duplicate line {i}", "\r\n".join(lines[: i + 1] + lines[i:]) + "\r\n"
    if kind == "swap":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return f"swap lines {i} {j}", "\r\n".join(lines) + "\r\n"
    line = lines[i]
    value = rng.choice(GARBLE)
    sep = line.find(":") if line.startswith("a=") and ":" in line else 1
    if rng.random() < 0.5:  # the whole value
        lines[i] = line[: sep + 1] + value
    else:  # one space-separated field of it
        head, fields = line[: sep + 1], line[sep + 1 :].split(" ")
        fields[rng.randrange(len(fields))] = value
        lines[i] = head + " ".join(fields)
    return f"garble line {i} ({line[:24]!r}) with {value[:12]!r}", "\r\n".join(lines) + "\r\n"


def cases(seed: int, count: int) -> list[tuple[str, str]]:
    """The named cases and `count` seeded mutations."""
    rng = random.Random(seed)
    return list(NAMED.items()) + [mutate(rng) for _ in range(count)]
