"""Country of an IP address, from the data file that ships inside geoip2fast (no download)."""
from __future__ import annotations

import functools
import ipaddress


@functools.cache
def _db():
    from geoip2fast import GeoIP2Fast

    return GeoIP2Fast(verbose=False)


def country_of(ip: str) -> str | None:
    """ISO 3166-1 alpha-2 code, or None for addresses with no country (private, loopback, unknown)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if not addr.is_global:
        return None
    code = _db().lookup(str(addr)).country_code
    return code if code and len(code) == 2 and code.isalpha() else None


def login_allowed(geo_limit: str, ip: str) -> bool:
    """`geo_limit` ('IL,US') allows only those countries.

    Addresses that cannot be placed in any country (loopback, private
    networks) are allowed: they are the admin's own network, not a foreign one.
    """
    allowed = {c.strip().upper() for c in (geo_limit or "").split(",") if c.strip()}
    if not allowed:
        return True
    try:
        if not ipaddress.ip_address(ip).is_global:
            return True
    except ValueError:
        return False
    return country_of(ip) in allowed
