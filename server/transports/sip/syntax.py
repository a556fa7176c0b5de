"""SIP's message model and header grammar (RFC 3261 sections 7 and 25), sans I/O: `SipMessage`,
`SipError`, header names (compact forms, canonical spelling), and the header values: lists,
parameters, name-addr (From, To, Contact), Via and its received/rport stamp, CSeq.

Every value a peer controls is checked here; anything malformed raises `SipError`.
"""

from __future__ import annotations

import re
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

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VIA = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;\[\]]+)"
    r"(?:\s*:\s*([0-9]{1,5}))?\s*(.*)",
    re.IGNORECASE | re.DOTALL,
)
MAX_CSEQ = 2**31 - 1


def ascii_digits(text: str, max_len: int) -> bool:
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


def parse_cseq(value: str, *, partial: SipMessage | None = None) -> tuple[int, str]:
    """(number, method) of a CSeq value such as `1 INVITE`; SipError if malformed."""
    parts = value.split()
    if len(parts) != 2 or not ascii_digits(parts[0], 10):
        raise SipError("bad CSeq", code="bad_cseq", partial=partial)
    number = int(parts[0])
    if number > MAX_CSEQ or not TOKEN.fullmatch(parts[1]):
        raise SipError("bad CSeq", code="bad_cseq", partial=partial)
    return number, parts[1]



# ---------------------------------------------------------------------------------------------
# Header values


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

