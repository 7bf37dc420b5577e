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
from urllib.parse import parse_qs, urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_COOKIE = "crackscan_token"
SAFE_METHODS = frozenset({"GET", "HEAD"})


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
        names |= {hostname.lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass
    return frozenset(names)


def host_name(header: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


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
        if scope["method"] not in SAFE_METHODS and _cross_origin(headers, host):
            await _refuse(scope, receive, send, 403, "a request from another site may not change this server: send "
                                                     "it from the server's own page, or from a tool (curl, Python)")
            return
        set_cookie = False
        if self.token is not None:
            given = _token_in(headers, scope.get("query_string", b""))
            if given is None or not hmac.compare_digest(given[0].encode(), self.token.encode()):
                await _refuse(scope, receive, send, 401, "this server needs its access token: open the address it "
                                                         "printed when it started (…/?token=…), or send "
                                                         "Authorization: Bearer TOKEN")
                return
            set_cookie = given[1] == "query"

        async def send_with_cookie(message: Any) -> None:
            if set_cookie and message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cross_origin(headers: dict[str, str], host: str) -> bool:
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames and file:// pages
        return True
    return urlsplit(origin).netloc.lower() != host.strip().lower()


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
