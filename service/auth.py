"""API-key authentication: the key travels in the X-API-Key header.

Keys come from RUL_API_KEYS / RUL_API_KEYS_FILE (`service.settings`). Every configured key is
compared in constant time, all of them every time, so timing tells nothing about which or how
much of a key matched. Health is open (load balancers probe it); everything else needs a key
once any key is configured.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from service.errors import ApiError

HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/v1/health"})


def check_key(presented: str | None, keys: Sequence[str]) -> None:
    """Raise 401 for a missing key, 403 for a wrong one; return for a valid one."""
    if not keys:
        return
    if not presented:
        raise ApiError(401, f"this endpoint needs an API key in the {HEADER} header",
                       f"header.{HEADER}", headers={"WWW-Authenticate": HEADER})
    given = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    if not matched:
        raise ApiError(403, f"the API key in {HEADER} is not valid", f"header.{HEADER}")


def needs_key(path: str) -> bool:
    return path.rstrip("/") not in OPEN_PATHS
