"""Which HTTP proxy an upload goes through, from the environment: pure, no I/O.

Corporate networks often reach object storage only through a proxy named in `HTTPS_PROXY` (and
`HTTP_PROXY` for plain-HTTP stores such as a local emulator), with exceptions in `NO_PROXY`. The
rules are those of curl, requests and Python's urllib, which users already rely on:

- the lower-case variable wins over the upper-case one; `ALL_PROXY` applies when neither is set;
- a proxy URL without a scheme is `http://`; `user:password@` in it becomes `Proxy-Authorization`;
- `NO_PROXY` is a comma-separated list of host names (each also matching its subdomains, with or
  without a leading `.` or `*.`), IP addresses, CIDR blocks and `host:port` entries; `*` alone
  turns the proxy off.

Only `http://` proxies are supported (HTTPS targets are reached through `CONNECT`); an `https://`
or SOCKS proxy URL is refused with a message naming the variable, rather than silently ignored.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Proxy", "ProxySettingError", "proxy_for"]


class ProxySettingError(ValueError):
    """A proxy variable is set to something the uploader cannot use; the message names it."""


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy: where to connect, and the credentials to present (None: none)."""

    host: str
    port: int
    authorization: str | None = None  # the Proxy-Authorization header's value
    variable: str = ""  # the environment variable it came from (for messages)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _get(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for key in (name.lower(), name.upper()):
        value = env.get(key, "").strip()
        if value:
            return key, value
    return None


def _parse(variable: str, value: str) -> Proxy:
    text = value if "://" in value else f"http://{value}"
    parts = urlsplit(text)
    if parts.scheme != "http":
        raise ProxySettingError(
            f"{variable}={parts.scheme}://… is not supported: nbd talks to proxies over plain HTTP "
            f"(HTTPS uploads still go through CONNECT); set {variable}=http://HOST:PORT"
        )
    if not parts.hostname:
        raise ProxySettingError(f"{variable}={value!r} names no proxy host; set it to http://HOST:PORT")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxySettingError(f"{variable}={value!r} has a bad port; set it to http://HOST:PORT") from None
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    return Proxy(parts.hostname, port, authorization, variable)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port: int | None = None
        if entry.count(":") == 1 and not entry.startswith("["):  # host:port (not an IPv6 address)
            name, _, port_text = entry.partition(":")
            if port_text.isdigit():
                entry, entry_port = name, int(port_text)
        elif entry.startswith("[") and "]:" in entry:
            name, _, port_text = entry.partition("]:")
            if port_text.isdigit():
                entry, entry_port = name + "]", int(port_text)
        if entry_port is not None and entry_port != port:
            continue
        entry = entry.strip("[]")
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.removeprefix("*.").lstrip(".")
        if host == domain or host.endswith("." + domain):
            return True
    return False


def proxy_for(url: str, env: Mapping[str, str]) -> Proxy | None:
    """The proxy an `http(s)` request to `url` goes through, or None for a direct connection.

    Raises ProxySettingError when the variable that applies is unusable.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    setting = _get(env, f"{scheme}_proxy") or _get(env, "all_proxy")
    if setting is None:
        return None
    no_proxy = _get(env, "no_proxy")
    if no_proxy is not None and _bypassed(host, port, no_proxy[1]):
        return None
    return _parse(*setting)
