"""`ramsweep serve`: a live, read-only dashboard of results files, for a browser or a phone.

Safe by default: it binds 127.0.0.1; any other --host needs a token (generated and printed,
or given), and the Host header must name this server. It never writes a results, claims or
cache file (app.py, feed.py). Needs the `serve` extra (Starlette and uvicorn).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
import string
from collections.abc import Callable
from urllib.parse import quote

from ramsweep.errors import ConfigError

DEFAULT_PORT = 8765
GENERATE = "auto"  # --token auto: a fresh token, printed with the URL
MIN_TOKEN = 16
MIN_DISTINCT = 8  # different characters a token needs besides spaces: 16 spaces or "aaaa…" are no secret


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require: None on a loopback host without one; generated for `auto`;
    refused (one line, exit 2) when a host beyond this machine has none, or one short or
    repetitive enough to guess."""
    if token == GENERATE:
        return secrets.token_urlsafe(24)
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(f"--token: {len(token)} characters is too short to guess-proof; give at least {MIN_TOKEN}, "
                          f"or --token {GENERATE} to have one generated")
    distinct = len(set(token or "") - set(string.whitespace))
    if token is not None and distinct < MIN_DISTINCT:
        raise ConfigError(f"--token: it has {distinct} different characters besides spaces, too few to guess-proof; "
                          f"give one with at least {MIN_DISTINCT}, or --token {GENERATE} to have one generated")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host}: other machines could read the dashboard without a token; add --token "
                          f"{GENERATE} (a token is generated and printed) or --token YOURS, or keep the default "
                          "127.0.0.1 and reach it over an SSH tunnel (see README)")
    return token


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def allowed_hosts(host: str, extra: list[str] = ()) -> list[str]:
    """The names a request's Host header may give: this machine's loopback names, and, when it
    listens beyond them, the host it binds, its own names and addresses, and `extra` (refused
    with a wildcard, which would let any site's name in: the DNS-rebinding check undone)."""
    from ramsweep.serve.app import LOOPBACK_NAMES

    for name in extra:
        if "*" in name:
            raise ConfigError(f"--allow-host {name}: a wildcard would let pages of any site that names this server "
                              "read the dashboard (DNS rebinding); give each name the browser uses, e.g. --allow-host "
                              "nas.lan, once per name")
        if ":" in name.strip("[]") and not _is_address(name.strip("[]")) or not name.strip():
            raise ConfigError(f"--allow-host {name!r}: give a host name or address, without a port (the Host check "
                              "ignores ports), e.g. --allow-host nas.lan")
    names = set(LOOPBACK_NAMES) | set(extra)
    if not is_loopback(host):
        wildcard = host in ("0.0.0.0", "::", "")
        if not wildcard:
            names.add(host)
        names |= {socket.gethostname(), socket.getfqdn()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
        if wildcard:
            names |= set(_local_addresses())
    return sorted(names)


def _local_addresses() -> list[str]:
    """The address this machine uses towards a LAN (a UDP socket sends nothing to learn it)."""
    found = []
    for probe in ("10.255.255.255", "192.168.255.255"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((probe, 1))
                found.append(s.getsockname()[0])
            except OSError:
                pass
    return found


def serve(results: list[str | os.PathLike], *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          token: str | None = None, allow_hosts: list[str] = (), say: Callable[[str], None] = print) -> None:
    """Serve the dashboard of `results` until interrupted."""
    token = resolve_token(host, token)
    try:
        import uvicorn

        from ramsweep.serve.app import create_app
        from ramsweep.serve.feed import Feed
    except ImportError as e:
        raise ConfigError(f"ramsweep serve needs the serve extra ({e.name} is missing): pip install "
                          "'ramsweep[serve]'") from None
    feed = Feed(results)  # a path that cannot be a results file (a folder, a FIFO, out of reach) is refused here
    app = create_app(feed, token=token, hosts=allowed_hosts(host, list(allow_hosts)))
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    for f in feed.files:
        if not f.store.path.exists():
            say(f"{f.store.path} does not exist yet: the page shows it once `ramsweep run` writes it")
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    query = f"?token={quote(token, safe='')}" if token else ""  # a token's & or # must not end the URL
    say(f"ramsweep serve: http://{shown}:{bound}/{query}  (read-only; Ctrl-C stops it)")
    if token and not is_loopback(host):
        say("the token is the key to this dashboard: share the URL only with who may read these results")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1,
                            lifespan="on", proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a port from 0 to 65535 (0: any free one)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except socket.gaierror as e:
        sock.close()
        raise ConfigError(f"--host {host}: {e.strerror}; give an address of this machine, e.g. 127.0.0.1") from None
    except OSError as e:
        sock.close()
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "already in use" if e.errno == errno.EADDRINUSE else "needs privileges (ports below 1024)"
            raise ConfigError(f"--port {port} on {host}: {why}; choose another with --port (0: any free port)") from None
        raise ConfigError(f"--host {host}: cannot listen there ({e.strerror}); give an address of this machine, "
                          "e.g. 127.0.0.1") from None
    sock.listen(128)
    return sock


__all__ = ["DEFAULT_PORT", "allowed_hosts", "resolve_token", "serve"]
