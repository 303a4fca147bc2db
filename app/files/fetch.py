"""Fetching a query image by URL without becoming a way into the network the service sits in (SSRF).

Off until ``CBIR_FETCH_ALLOWED_HOSTS`` lists hosts. A URL must be http(s), name a listed host, and every
address the host resolves to must be a public one (no loopback, private, link-local — the cloud metadata
address 169.254.169.254 —, multicast, reserved or unspecified address); the connection then goes to the
address that was checked, not to a second lookup, so DNS rebinding between check and use cannot redirect
it. Redirects are not followed (the target would need the same checks: the client is told the Location).
Timeouts (connect, each read, and the whole download) and the upload size limit bound what one request can
cost; the pixel limit applies when the bytes are decoded, as for uploads.

urllib3 rather than httpx: its connection pools take the address to connect to and the host name for TLS
(SNI and certificate check) separately, which is what pinning the checked address needs.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import SplitResult, urlsplit

import urllib3

from app.config import Settings
from app.errors import PayloadTooLargeError, UrlRefusedError

MAX_URL = 2048
CHUNK = 64 * 1024


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in allowed)


def address_allowed(address: str) -> bool:
    """Only public unicast addresses (an IPv4-mapped IPv6 address is judged as the IPv4 one)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRefusedError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def fetch_image(url: str, settings: Settings) -> bytes:
    """The bytes at ``url``, or UrlRefusedError / PayloadTooLargeError saying why not."""
    if not settings.fetch_allowed_hosts:
        raise UrlRefusedError(
            "search by URL is off: list the hosts it may fetch from in CBIR_FETCH_ALLOWED_HOSTS, or upload "
            "the image as `file`"
        )
    if len(url) > MAX_URL:
        raise UrlRefusedError(f"the URL is longer than {MAX_URL} characters")
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefusedError(f"the URL's port is invalid: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefusedError(f"only http:// and https:// URLs with a host can be fetched, got {url!r}")
    if parts.username or parts.password:
        raise UrlRefusedError("URLs with credentials (user:password@) are refused")
    host = parts.hostname
    if not host_allowed(host, settings.fetch_allowed_hosts):
        raise UrlRefusedError(
            f"host {host!r} is not in CBIR_FETCH_ALLOWED_HOSTS ({', '.join(settings.fetch_allowed_hosts)})"
        )
    addresses = resolve(host, port)
    refused = [address for address in addresses if not address_allowed(address)]
    if refused or not addresses:
        raise UrlRefusedError(
            f"host {host!r} resolves to {', '.join(refused) or 'nothing'}: loopback, private, link-local "
            "and other non-public addresses are never fetched"
        )
    return _download(parts.scheme, host, addresses[0], port, parts, settings)


def _download(
    scheme: str, host: str, address: str, port: int, parts: SplitResult, settings: Settings
) -> bytes:
    budget = settings.fetch_timeout_s
    timeout = urllib3.Timeout(connect=min(5.0, budget), read=budget)
    pool: urllib3.HTTPConnectionPool
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address, port, timeout=timeout, retries=False, server_hostname=host, assert_hostname=host
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    limit = settings.max_upload_bytes
    deadline = time.monotonic() + budget
    try:
        response = pool.urlopen(
            "GET",
            target,
            headers={"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": "cbir", "Accept": "image/*"},
            redirect=False,
            preload_content=False,
        )
        try:
            if 300 <= response.status < 400:
                raise UrlRefusedError(
                    f"{parts.geturl()} redirects to {response.headers.get('location', '?')}: redirects are "
                    "not followed; search with the final URL"
                )
            if response.status != 200:
                raise UrlRefusedError(f"{parts.geturl()} answered HTTP {response.status}")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise PayloadTooLargeError(
                    f"the image at the URL is {length} bytes, above the {limit} byte upload limit "
                    "(CBIR_MAX_UPLOAD_BYTES)"
                )
            data = bytearray()
            for chunk in response.stream(CHUNK):
                data += chunk
                if len(data) > limit:
                    raise PayloadTooLargeError(
                        f"the image at the URL is larger than the {limit} byte upload limit "
                        "(CBIR_MAX_UPLOAD_BYTES)"
                    )
                if time.monotonic() > deadline:
                    raise UrlRefusedError(
                        f"fetching the URL took longer than {budget:g} s (CBIR_FETCH_TIMEOUT_S)"
                    )
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise UrlRefusedError(f"could not fetch {parts.geturl()}: {exc}") from exc
    finally:
        pool.close()
    if not data:
        raise UrlRefusedError(f"{parts.geturl()} answered an empty body")
    return bytes(data)
