"""Who may talk to the server: the Host it is asked by, the origin a change comes from, the token.

A web page on any other site can make the visitor's browser send requests to a server on
their machine. Three checks keep such pages out:

- **Host**: every request must name one of the hosts the server answers to (loopback names,
  the address it is bound to, ``--allow-host``): a DNS-rebinding page, whose requests name
  its own host, is refused before anything is read or answered.
- **Origin**: a request that can change state (anything but GET and HEAD) is refused when
  the browser says it comes from another origin (``Origin`` or ``Sec-Fetch-Site``). Tools
  such as curl send neither and pass; no CORS header is ever sent, so no other origin can
  read an answer either.
- **Token**: a server bound beyond loopback needs an access token on every request (as
  notebook servers do): in ``Authorization: Bearer``, in ``?token=`` once (the page then keeps
  it in a same-site cookie), or in that cookie.
"""

import hmac
import ipaddress
import secrets
import socket
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_COOKIE = "crackscan_token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# A token guessed from a short word is no lock: new_token() makes 32 characters, and a token of
# one's own must have at least this many (an unset shell variable gives "", which must never pass).
MIN_TOKEN_CHARS = 16


def token_problem(token: str | None, bound_beyond_loopback: bool) -> str | None:
    """Why a server may not start with ``token`` (None: it may): an empty or blank token would
    let anyone in, and beyond loopback a short one can be guessed."""
    if token is None:
        return None
    if not token.strip():
        return ("--token is empty or blank, which would let anyone in (an unset shell variable gives this): give a "
                "token of at least 16 characters, or leave --token out and crackscan makes one")
    if token != token.strip() or any(c.isspace() or not c.isprintable() for c in token):
        return "--token holds spaces or control characters, which a cookie or header cannot carry whole"
    if bound_beyond_loopback and len(token) < MIN_TOKEN_CHARS:
        return (f"--token is {len(token)} characters, too short for a server other machines reach: give at least "
                f"{MIN_TOKEN_CHARS}, or leave --token out and crackscan makes one")
    return None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def hosts_answered(bind_host: str, allowed: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The host names a server bound to ``bind_host`` answers to: loopback names, the bound
    address, and, bound to every interface, this machine's names; plus ``allowed`` ("*" for any)."""
    names = set(LOOPBACK_NAMES) | {name.lower() for name in allowed}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(bind_host.lower())
    else:
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()} | interface_addresses()
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass
    return frozenset(names)


def interface_addresses() -> set[str]:
    """This machine's own addresses on every interface (Linux), so a server bound to every
    interface answers to its LAN address too; empty where they cannot be read."""
    found: set[str] = set()
    try:
        import fcntl
        import struct

        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never connected nor sent on: ioctl only
        try:
            for _, name in socket.if_nameindex():
                try:
                    answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                    found.add(socket.inet_ntoa(answer[20:24]))
                except OSError:
                    continue
        finally:
            probe.close()
    except (ImportError, OSError, AttributeError):
        pass
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                raw = line.split()[0]
                found.add(str(ipaddress.ip_address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def host_name(header: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "::1". A header that is
    not a name and an optional port ("[::1].evil.example:80") is returned whole, so it matches
    no host the server answers to."""
    header = header.strip().lower()
    if header.startswith("["):
        inside, closed, rest = header[1:].partition("]")
        if closed and (rest == "" or (rest.startswith(":") and rest[1:].isdigit())):
            return inside
        return header
    if header.count(":") == 1:
        name, port = header.rsplit(":", 1)
        return name if port.isdigit() else header
    return header


class RequestGuard:
    """ASGI middleware: the Host, origin and token checks, before any route runs."""

    def __init__(self, app: Any, hosts: frozenset[str], token: str | None = None):
        self.app, self.hosts, self.token = app, hosts, token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host", "")
        if "*" not in self.hosts and host_name(host) not in self.hosts:
            await _refuse(scope, receive, send, 403, f"this server does not answer to the host {host!r:.80}: start it "
                                                     f"with --allow-host {host_name(host)[:80]} if that is its name")
            return
        if scope["method"] not in SAFE_METHODS and _cross_origin(headers, host, _scheme(scope, headers)):
            await _refuse(scope, receive, send, 403, "a request from another site may not change this server: send "
                                                     "it from the server's own page, or from a tool (curl, Python)")
            return
        set_cookie = False
        if self.token is not None:
            given = _token_in(headers, scope.get("query_string", b""))
            if given is None or not given[0] or not hmac.compare_digest(given[0].encode(), self.token.encode()):
                await _refuse(scope, receive, send, 401, "this server needs its access token: open the address it "
                                                         "printed when it started (…/?token=…), or send "
                                                         "Authorization: Bearer TOKEN")
                return
            set_cookie = given[1] == "query"
        cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict" + \
            ("; Secure" if _scheme(scope, headers) == "https" else "")
        if set_cookie and scope["method"] in SAFE_METHODS:
            # The token goes into the cookie and out of the address bar (and the browser's history).
            await _redirect_without_token(scope, send, cookie)
            return

        async def send_with_cookie(message: Any) -> None:
            if set_cookie and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _scheme(scope: Any, headers: dict[str, str]) -> str:
    """http or https as the browser sees the server: behind a TLS proxy, what it forwards."""
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded if forwarded in ("http", "https") else str(scope.get("scheme") or "http")


async def _redirect_without_token(scope: Any, send: Any, cookie: str) -> None:
    kept = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            if k != "token"]
    location = (scope.get("root_path", "") + scope.get("path", "/")) or "/"
    if kept:
        location += "?" + urlencode(kept)
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1", "replace")), (b"set-cookie", cookie.encode()),
                            (b"cache-control", b"no-store"), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _cross_origin(headers: dict[str, str], host: str, scheme: str = "http") -> bool:
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames and file:// pages
        return True
    parts = urlsplit(origin)
    return parts.netloc.lower() != host.strip().lower() or parts.scheme.lower() != scheme


def _token_in(headers: dict[str, str], query: bytes) -> tuple[str, str] | None:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip(), "header"
    given = parse_qs(query.decode("latin-1")).get("token")
    if given:
        return given[0], "query"
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value, "cookie"
    return None


async def _refuse(scope: Any, receive: Any, send: Any, status: int, detail: str) -> None:
    from starlette.responses import JSONResponse

    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
