"""Google's V4 signature of a signed URL, recomputed independently of google-cloud-storage.

Used by the tests to check the controller's signed URLs (the emulators check no signature).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding


def _rfc3986(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def verify_v4(url: str, method: str, headers: dict[str, str], public_key: Any) -> dict[str, str]:
    """Recomputes Google's V4 signature of `url` for a request with `headers`; raises if it differs.

    Returns the query parameters. Follows the documented process: canonical request =
    VERB, path, canonical query (sorted, RFC 3986-encoded, without X-Goog-Signature), canonical
    headers (lowercase, sorted, `name:value` lines), an empty line, signed headers, UNSIGNED-PAYLOAD;
    string to sign = GOOG4-RSA-SHA256, X-Goog-Date, credential scope, hex SHA-256 of the canonical
    request; the signature is RSASSA-PKCS1-v1_5 with SHA-256 of it, hex-encoded.
    """
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in sorted(query.items()))
    all_headers = {"host": parts.netloc, **{k.lower(): v.strip() for k, v in headers.items()}}
    signed = query["X-Goog-SignedHeaders"].split(";")
    assert signed == sorted(signed)
    canonical_headers = "".join(f"{name}:{all_headers[name]}\n" for name in signed)
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, canonical_headers, ";".join(signed), "UNSIGNED-PAYLOAD"]
    )
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            query["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return query
