"""SIP messages, sans I/O: parse a datagram into a `SipMessage`, serialize one back, build responses.

RFC 3261 section 7 syntax with the robustness the real world needs: compact header names, folded
lines, bare-LF line ends, leading CRLFs, UDP framing by Content-Length (section 18.3). Every size
a peer controls is bounded; anything malformed raises `SipError`, carrying what could be parsed so
that the caller can still answer 400 when the message names a Via to answer to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# RFC 3261 section 7.3.3 plus the later ones registered with IANA.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
    "From", "In-Reply-To", "Info-Package", "Max-Forwards", "Min-Expires", "MIME-Version",
    "Organization", "P-Asserted-Identity", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Recv-Info",
    "Reply-To", "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Subject",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate", *COMPACT_FORMS.values(),
)
_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}

# Header fields whose values are comma-separated lists (RFC 3261 section 7.3.1); others (From,
# To, Call-ID, CSeq, auth headers, dates) may hold commas inside a single value.
LIST_HEADERS = frozenset(
    {"Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require", "Proxy-Require",
     "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding"}
)

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Control characters other than HT never belong in a start line or a header line.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.IGNORECASE)
_VIA = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;\[\]]+)"
    r"(?:\s*:\s*([0-9]{1,5}))?\s*(.*)",
    re.IGNORECASE | re.DOTALL,
)
MAX_CSEQ = 2**31 - 1


def _digits(text: str, max_len: int) -> bool:
    """ASCII digits only, at most `max_len` of them (str.isdigit alone accepts '²')."""
    return 0 < len(text) <= max_len and text.isascii() and text.isdigit()


class SipError(ValueError):
    """A message we cannot accept: `status` is the response it deserves, `code` a short reason,
    `partial` what was parsed before the fault (start line and headers) or None."""

    def __init__(self, message: str, *, status: int = 400, code: str = "malformed",
                 partial: SipMessage | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.partial = partial


def canonical_name(name: str) -> str:
    """The long, conventionally spelled name of a header (`i` -> `Call-ID`, `cseq` -> `CSeq`)."""
    stripped = name.strip()
    low = stripped.lower()
    if low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low, stripped)


@dataclass
class SipMessage:
    """A request (method and uri set) or a response (status and reason set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        """True for a request, False for a response."""
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of a header (any spelling or compact form), or None."""
        want = canonical_name(name).lower()
        for key, value in self.headers:
            if key.lower() == want:
                return value
        return None

    def headers_all(self, name: str) -> list[str]:
        """Every header line's value for `name`, in order (not split on commas)."""
        want = canonical_name(name).lower()
        return [value for key, value in self.headers if key.lower() == want]

    def header_list(self, name: str) -> list[str]:
        """The values of a list header (Via, Route...), comma-separated lines split apart."""
        out: list[str] = []
        for value in self.headers_all(name):
            out.extend(split_list(value))
        return out

    @property
    def call_id(self) -> str:
        """The Call-ID, or an empty string."""
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) from CSeq; raises SipError if absent or malformed."""
        return parse_cseq(self.header("CSeq") or "")


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_message(data: bytes, *, max_bytes: int = 8192, max_headers: int = 64,
                  max_line: int = 2048) -> SipMessage:
    """Parse one UDP datagram into a SipMessage; raise SipError (never anything else) if malformed."""
    data = bytes(data)
    if len(data) > max_bytes:
        partial: SipMessage | None = None
        try:
            partial = _parse(data[:max_bytes], max_headers, max_line, head_only=True)
        except SipError as exc:
            partial = exc.partial
        raise SipError(f"message of {len(data)} bytes exceeds {max_bytes}", status=513,
                       code="too_large", partial=partial)
    return _parse(data, max_headers, max_line, head_only=False)


def _parse(data: bytes, max_headers: int, max_line: int, *, head_only: bool) -> SipMessage:
    # RFC 3261 section 7.5: CRLFs before the start line are ignored (they are keep-alives).
    pos = 0
    while pos < len(data) and data[pos] in (0x0D, 0x0A):
        pos += 1
    if pos >= len(data):
        raise SipError("empty message", code="empty")

    lines: list[str] = []
    body_start = len(data)
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        raw = data[pos:end]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        pos = len(data) if nl < 0 else nl + 1
        if not raw:
            body_start = pos
            break
        if len(raw) > max_line:
            raise SipError(f"line longer than {max_line} bytes", code="line_too_long",
                           partial=_partial(lines))
        if _CONTROL.search(raw):
            raise SipError("control character in header", code="bad_line", partial=_partial(lines))
        # Header text is UTF-8 (section 7.3.1); bytes that are not stay visible as U+FFFD.
        lines.append(raw.decode("utf-8", errors="replace"))

    msg = _start_line(lines[0])
    _headers_into(msg, lines[1:], max_headers)
    if head_only:
        return msg

    rest = data[body_start:]
    lengths = {v.strip() for v in msg.headers_all("Content-Length")}
    if len(lengths) > 1:
        raise SipError("conflicting Content-Length", code="bad_content_length", partial=msg)
    if lengths:
        text = lengths.pop()
        if not _digits(text, 9):
            raise SipError("bad Content-Length", code="bad_content_length", partial=msg)
        length = int(text)
        # Section 18.3: a datagram shorter than its Content-Length is an error; bytes past the
        # body are discarded.
        if length > len(rest):
            raise SipError("body shorter than Content-Length", code="short_body", partial=msg)
        msg.body = rest[:length]
    else:
        msg.body = rest  # no Content-Length on UDP: the body runs to the end of the datagram
    _check_mandatory(msg)
    return msg


def _partial(lines: list[str]) -> SipMessage | None:
    """Best-effort message from the lines read so far, for a 400 reply; None if unusable."""
    if not lines:
        return None
    try:
        msg = _start_line(lines[0])
    except SipError:
        return None
    try:
        _headers_into(msg, lines[1:], len(lines))
    except SipError:
        pass
    return msg


def _start_line(line: str) -> SipMessage:
    if line[:8].upper() == "SIP/2.0 ":
        match = _STATUS_LINE.fullmatch(line)
        if not match:
            raise SipError("bad status line", code="bad_start_line")
        return SipMessage(status=int(match.group(1)), reason=match.group(2) or "")
    parts = line.split(" ")
    if len(parts) != 3 or parts[2].upper() != "SIP/2.0":
        raise SipError("bad request line", code="bad_start_line")
    method, uri = parts[0], parts[1]
    if not _TOKEN.fullmatch(method) or not uri or ":" not in uri:
        raise SipError("bad request line", code="bad_start_line")
    return SipMessage(method=method, uri=uri)


def _headers_into(msg: SipMessage, lines: list[str], max_headers: int) -> None:
    headers = msg.headers
    for line in lines:
        if line[0] in " \t":
            # Folded continuation (section 7.3.1): joins the previous value with one space.
            if not headers:
                raise SipError("continuation before any header", code="bad_header", partial=msg)
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.fullmatch(name):
            raise SipError("bad header line", code="bad_header", partial=msg)
        if len(headers) >= max_headers:
            raise SipError(f"more than {max_headers} headers", code="too_many_headers",
                           partial=msg)
        headers.append((canonical_name(name), value.strip()))


def _check_mandatory(msg: SipMessage) -> None:
    # Section 8.1.1: the minimum a request (and its responses) must carry.
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not msg.header(name):
            raise SipError(f"missing {name}", code="missing_header", partial=msg)
    _, method = parse_cseq(msg.header("CSeq") or "", partial=msg)
    if msg.is_request and method != msg.method:
        raise SipError("CSeq method differs from the request's", code="bad_cseq", partial=msg)
    forwards = msg.header("Max-Forwards")
    if forwards is not None and not _digits(forwards, 3):
        raise SipError("bad Max-Forwards", code="bad_header", partial=msg)


def parse_cseq(value: str, *, partial: SipMessage | None = None) -> tuple[int, str]:
    """(number, method) of a CSeq value such as `1 INVITE`; SipError if malformed."""
    parts = value.split()
    if len(parts) != 2 or not _digits(parts[0], 10):
        raise SipError("bad CSeq", code="bad_cseq", partial=partial)
    number = int(parts[0])
    if number > MAX_CSEQ or not _TOKEN.fullmatch(parts[1]):
        raise SipError("bad CSeq", code="bad_cseq", partial=partial)
    return number, parts[1]


# ---------------------------------------------------------------------------------------------
# Header value helpers


def _split_outside(value: str, sep: str, *, angle: bool) -> list[str]:
    """Split on `sep` outside double quotes (and outside <...> when `angle`)."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    depth = 0
    for ch in value:
        if quoted:
            buf.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif angle and ch == "<":
            depth += 1
        elif angle and ch == ">" and depth:
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def split_list(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and angle brackets; drop empties."""
    return [part.strip() for part in _split_outside(value, ",", angle=True) if part.strip()]


def parse_params(text: str) -> dict[str, str | None]:
    """`;a=1;b;c="x"` -> {'a': '1', 'b': None, 'c': 'x'} (names lowercased, quotes removed)."""
    params: dict[str, str | None] = {}
    for part in _split_outside(text, ";", angle=False):
        part = part.strip()
        if not part:
            continue
        name, sep, val = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not sep:
            params.setdefault(name, None)
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = _unquote(val[1:-1])
        params.setdefault(name, val)
    return params


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def quote(text: str) -> str:
    """A quoted-string for `text` (backslash-escaping quotes and backslashes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact/Route value: display name, URI and header parameters."""

    display: str
    uri: str
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        """The `tag` parameter, or None."""
        return self.params.get("tag") or None


def parse_name_addr(value: str) -> NameAddr:
    """Parse `"Alice" <sip:a@b>;tag=1`, `<sip:a@b>` or `sip:a@b;tag=1`; SipError if malformed."""
    text = value.strip()
    display = ""
    if text.startswith('"'):
        i = 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                break
            i += 1
        if i >= len(text):
            raise SipError("unterminated display name", code="bad_name_addr")
        display = _unquote(text[1:i])
        text = text[i + 1:].lstrip()
        if not text.startswith("<"):
            raise SipError("display name without <uri>", code="bad_name_addr")
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipError("unterminated <uri>", code="bad_name_addr")
        if not display:
            display = text[:lt].strip()
        uri = text[lt + 1:gt].strip()
        rest = text[gt + 1:].strip()
        if rest and not rest.startswith(";"):
            raise SipError("junk after <uri>", code="bad_name_addr")
    else:
        # addr-spec form: parameters after the URI belong to the header (section 20.10).
        uri, _, rest = text.partition(";")
        uri = uri.strip()
    if not uri or ":" not in uri or any(ch in uri for ch in ' <>"'):
        raise SipError("bad URI", code="bad_name_addr")
    return NameAddr(display=display, uri=uri, params=parse_params(rest))


@dataclass(frozen=True)
class Via:
    """One Via value: transport, sent-by host and port, parameters (branch, received, rport)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str:
        """The branch parameter, or an empty string."""
        return self.params.get("branch") or ""

    @property
    def sent_by(self) -> str:
        """`host[:port]`, lowercased, for transaction matching."""
        return self.host.lower() + (f":{self.port}" if self.port is not None else "")


def parse_via(value: str) -> Via:
    """Parse one Via value such as `SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport`."""
    match = _VIA.fullmatch(value)
    if not match:
        raise SipError("bad Via", code="bad_via")
    transport, host, port_text, rest = match.groups()
    if rest and not rest.startswith(";"):
        raise SipError("bad Via", code="bad_via")
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        raise SipError("bad Via port", code="bad_via")
    return Via(transport=transport.upper(), host=host.strip("[]"), port=port,
               params=parse_params(rest))


def stamp_via(value: str, source: tuple[str, int]) -> str:
    """The top Via as a server records it: `received` and a filled-in `rport` (RFC 3581)."""
    via = parse_via(value)
    head, *params = _split_outside(value, ";", angle=False)
    has_rport = "rport" in via.params
    # RFC 3261 18.2.1 adds received when sent-by differs; RFC 3581 always adds it with rport.
    need_received = has_rport or via.host.lower() != source[0].lower()
    out = [head.strip()]
    for param in params:
        name = param.split("=", 1)[0].strip().lower()
        if name in ("received", "rport"):
            continue
        if param.strip():
            out.append(param.strip())
    if need_received:
        out.append(f"received={source[0]}")
    if has_rport:
        out.append(f"rport={source[1]}")
    return ";".join(out)


def format_host(host: str) -> str:
    """A host for a URI or Via: IPv6 literals get their brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def uri_scheme(uri: str) -> str:
    """The lowercased scheme of a URI (`sip`, `sips`, `tel`...)."""
    return uri.split(":", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------------
# Serializing


def serialize(msg: SipMessage) -> bytes:
    """Wire bytes for a message; Content-Length is (re)computed from the body."""
    if msg.is_request:
        start = f"{msg.method} {msg.uri} SIP/2.0"
    elif msg.status is not None:
        # The SP before an empty Reason-Phrase is still required (section 7.2).
        start = f"SIP/2.0 {msg.status} {msg.reason or ''}"
    else:
        raise ValueError("a message needs a method or a status")
    lines = [start]
    for name, value in msg.headers:
        if canonical_name(name) == "Content-Length":
            continue
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(msg.body)}")
    for line in lines:
        # A CR or LF smuggled into a value would start a new header (or a body): refuse.
        if "\r" in line or "\n" in line or "\x00" in line:
            raise ValueError(f"line break in SIP header: {line[:60]!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + bytes(msg.body)


def response_for(request: SipMessage, status: int, reason: str, *, to_tag: str | None = None,
                 headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                 content_type: str | None = None) -> SipMessage:
    """A response to `request` (section 8.2.6): Via(s), From, To (+tag), Call-ID, CSeq copied."""
    out: list[tuple[str, str]] = [("Via", value) for value in request.headers_all("Via")]
    from_value = request.header("From")
    if from_value is not None:
        out.append(("From", from_value))
    to_value = request.header("To")
    if to_value is not None:
        if to_tag:
            try:
                has_tag = parse_name_addr(to_value).tag is not None
            except SipError:
                has_tag = True  # leave a To we cannot read as it came
            if not has_tag:
                to_value = f"{to_value};tag={to_tag}"
        out.append(("To", to_value))
    for name in ("Call-ID", "CSeq"):
        value = request.header(name)
        if value is not None:
            out.append((name, value))
    # Section 12.1.1: Record-Route is copied into responses that can create a dialog.
    if 100 < status < 300:
        out.extend(("Record-Route", value) for value in request.headers_all("Record-Route"))
    out.extend(headers)
    if body and content_type:
        out.append(("Content-Type", content_type))
    return SipMessage(status=status, reason=reason, headers=out, body=body)
