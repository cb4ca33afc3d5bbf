"""Is `redis.url` one redis-py can connect with? Found without connecting.

`Redis.from_url` checks the scheme, the port and the values of the options it knows, but passes an
unknown option (`?socket_timout=5`) on to the connection, which fails only when the first command
connects (a TypeError deep in the client), and reads `/x` as database 0. Building the connection
object, which does no I/O, makes every option be checked now. The URL may hold a password, so a
reason never quotes it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_UNEXPECTED = re.compile(r"unexpected keyword argument '([^']+)'")


def redis_url_problem(url: str) -> str | None:
    """Why no Redis client could be made from `url`, or None."""
    parts = urlsplit(url)
    database = parts.path.strip("/")
    if parts.scheme in ("redis", "rediss") and database and not database.isdigit():
        return f"the path must be a database number (e.g. /0), not /{database}"
    if parts.scheme in ("redis", "rediss") and not parts.query and _port_ok(parts.netloc):
        return None  # nothing left that redis-py could refuse: no need to import it (~0.1 s) for every command
    import redis  # lazy: see above

    try:
        client = redis.Redis.from_url(url)
        client.connection_pool.make_connection()  # every option applied; no connection is opened
    except TypeError as e:
        unknown = _UNEXPECTED.search(str(e))
        return f"unknown option {unknown.group(1)!r} in the URL" if unknown else f"bad option in the URL: {e}"
    except (ValueError, redis.RedisError) as e:
        return str(e)
    return None


def _port_ok(netloc: str) -> bool:
    port = netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    return not port or (port.isdigit() and 0 <= int(port) <= 65535)
