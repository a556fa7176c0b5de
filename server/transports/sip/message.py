"""SIP messages, sans I/O: parse a datagram into a `SipMessage`, serialize one back, build responses.

RFC 3261 section 7 syntax with the robustness the real world needs: compact header names, folded
lines, bare-LF line ends, leading CRLFs, UDP framing by Content-Length (section 18.3). Every size
a peer controls is bounded; anything malformed raises `SipError`, carrying what could be parsed so
that the caller can still answer 400 when the message names a Via to answer to.

The message model and the header grammar are in `syntax.py`; this module re-exports them, so
`message` stays the one import for the rest of the SIP transport.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kombain.server.transports.sip.syntax import (
    COMPACT_FORMS,
    LIST_HEADERS,
    MAX_CSEQ,
    TOKEN,
    NameAddr,
    SipError,
    SipMessage,
    Via,
    ascii_digits,
    canonical_name,
    format_host,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_via,
    quote,
    split_list,
    stamp_via,
    uri_scheme,
)

__all__ = [
    "COMPACT_FORMS", "LIST_HEADERS", "MAX_CSEQ", "NameAddr", "SipError", "SipMessage", "Via",
    "canonical_name", "format_host", "parse_cseq", "parse_message", "parse_name_addr", "parse_params",
    "parse_via", "quote", "response_for", "serialize", "split_list", "stamp_via", "uri_scheme",
]

# Control characters other than HT never belong in a start line or a header line.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.IGNORECASE)


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
        if not ascii_digits(text, 9):
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
    if not TOKEN.fullmatch(method) or not uri or ":" not in uri:
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
        if not sep or not TOKEN.fullmatch(name):
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
    if forwards is not None and not ascii_digits(forwards, 3):
        raise SipError("bad Max-Forwards", code="bad_header", partial=msg)



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

