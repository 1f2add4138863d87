# mypy: disable-error-code="no-untyped-call"
"""Object storage for build contexts: the `ObjectStore` interface, its GCS and S3 implementations.

The third implementation, for clusters with no bucket, is `nbd_controller.incluster`. `make_store`
picks one by `NBD_STORE` (gcs | s3 | incluster).

Contexts are stored as `<prefix>/<md5>.tar.gz`. The controller never moves context bytes itself: it
hands out V4 signed URLs (PUT for the uploader, bound to the Content-MD5 and content type; GET for
the build's init container) and reads object metadata. Calls block: run them in a thread.

Signing needs a service-account identity: a key file, or (workload identity, no key) the IAM
Credentials signBlob API through `google.auth.iam.Signer`. Against an emulator
(STORAGE_EMULATOR_HOST) API calls are made with anonymous credentials and the key is used only to
sign: a client built with key credentials would try to reach the real token endpoint and hang.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from datetime import timedelta
from typing import Any, Protocol

from .config import Config, ConfigError
from .naming import object_name

__all__ = ["ObjectStore", "GCSStore", "S3Store", "make_store", "iam_signing_credentials", "CONTENT_TYPE"]

CONTENT_TYPE = "application/octet-stream"


class ObjectStore(Protocol):
    """Where contexts live. `md5` is always 32 lowercase hex digits."""

    def stat(self, md5: str) -> str | None:
        """The hex MD5 of the stored object for `md5`, or None when there is none."""

    def signed_put_url(self, md5: str, content_type: str, expires: timedelta) -> str:
        """A URL accepting one PUT of exactly the content with this MD5 and content type."""

    def signed_get_url(self, md5: str, expires: timedelta) -> str:
        """A URL to download the stored object."""

    def delete(self, md5: str) -> None:
        """Removes the object; absent is fine."""


def hex_to_b64(md5_hex: str) -> str:
    return base64.b64encode(binascii.unhexlify(md5_hex)).decode()


def b64_to_hex(md5_b64: str) -> str:
    return binascii.hexlify(base64.b64decode(md5_b64)).decode()


def iam_signing_credentials(source_credentials: Any, service_account_email: str, request: Any = None) -> Any:
    """Service-account credentials whose signatures come from IAM signBlob (no private key here).

    `source_credentials` authorize the signBlob call (on GKE: the workload identity); the identity
    needs `roles/iam.serviceAccountTokenCreator` on `service_account_email`.
    """
    from google.auth import iam
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    signer = iam.Signer(request or Request(), source_credentials, service_account_email)
    return service_account.Credentials(signer, service_account_email, "https://oauth2.googleapis.com/token")


class GCSStore:
    """Google Cloud Storage (or fake-gcs-server through STORAGE_EMULATOR_HOST)."""

    def __init__(self, client: Any, bucket: str, prefix: str, signing_credentials: Any) -> None:
        self._bucket = client.bucket(bucket)
        self._prefix = prefix
        self._signing = signing_credentials

    def _blob(self, md5: str) -> Any:
        return self._bucket.blob(object_name(self._prefix, md5))

    def stat(self, md5: str) -> str | None:
        blob = self._bucket.get_blob(object_name(self._prefix, md5))
        if blob is None or not blob.md5_hash:
            return None
        return b64_to_hex(blob.md5_hash)

    def signed_put_url(self, md5: str, content_type: str, expires: timedelta) -> str:
        url: str = self._blob(md5).generate_signed_url(
            version="v4",
            method="PUT",
            expiration=expires,
            content_md5=hex_to_b64(md5),
            content_type=content_type,
            credentials=self._signing,
        )
        return url

    def signed_get_url(self, md5: str, expires: timedelta) -> str:
        url: str = self._blob(md5).generate_signed_url(
            version="v4", method="GET", expiration=expires, credentials=self._signing
        )
        return url

    def delete(self, md5: str) -> None:
        from google.api_core import exceptions

        try:
            self._blob(md5).delete()
        except exceptions.NotFound:
            pass


# The user metadata key under which the controller records an object's MD5 when its ETag is not
# one (multipart uploads, SSE-KMS or SSE-C encryption): written only after hashing the bytes.
S3_MD5_METADATA = "nbd-md5"
_PLAIN_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')


class S3Store:
    """An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Cloudflare R2), through boto3.

    URLs are SigV4 presigned: a PUT signs `content-md5` and `content-type` as headers (the store
    refuses any other body with BadDigest, any other type with SignatureDoesNotMatch). Credentials
    come from boto3's usual chain: EKS IRSA (AWS_WEB_IDENTITY_TOKEN_FILE) or Pod Identity
    (AWS_CONTAINER_CREDENTIALS_FULL_URI), else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from a Secret.
    """

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    def _key(self, md5: str) -> str:
        return object_name(self._prefix, md5)

    def stat(self, md5: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self._key(md5))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        plain = _PLAIN_ETAG.match(str(head.get("ETag") or ""))
        encrypted = head.get("ServerSideEncryption") == "aws:kms" or head.get("SSECustomerAlgorithm")
        if plain and not encrypted:
            return plain.group(1)  # a single-part, unencrypted object's ETag is its MD5
        recorded = str((head.get("Metadata") or {}).get(S3_MD5_METADATA) or "")
        if re.fullmatch(r"[0-9a-f]{32}", recorded):
            return recorded
        return self._record_md5(md5, head)

    def _record_md5(self, md5: str, head: dict[str, Any]) -> str:
        """Hashes the object's bytes and records the MD5 in its metadata (a copy onto itself)."""
        body = self._client.get_object(Bucket=self._bucket, Key=self._key(md5))["Body"]
        digest = hashlib.md5()
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
        found = digest.hexdigest()
        self._client.copy_object(
            Bucket=self._bucket,
            Key=self._key(md5),
            CopySource={"Bucket": self._bucket, "Key": self._key(md5)},
            Metadata={**(head.get("Metadata") or {}), S3_MD5_METADATA: found},
            MetadataDirective="REPLACE",
            ContentType=str(head.get("ContentType") or CONTENT_TYPE),
        )
        return found

    def signed_put_url(self, md5: str, content_type: str, expires: timedelta) -> str:
        url: str = self._client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self._bucket,
                "Key": self._key(md5),
                "ContentMD5": hex_to_b64(md5),
                "ContentType": content_type,
            },
            ExpiresIn=int(expires.total_seconds()),
        )
        return url

    def signed_get_url(self, md5: str, expires: timedelta) -> str:
        url: str = self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._key(md5)},
            ExpiresIn=int(expires.total_seconds()),
        )
        return url

    def delete(self, md5: str) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=self._key(md5))  # absent: 204 as well


def s3_client(config: Config) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=config.s3_endpoint_url,
        region_name=config.s3_region,
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path" if config.s3_path_style else "virtual"},
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def make_store(config: Config, env: dict[str, str] | None = None) -> ObjectStore:
    """The store named by the configuration (NBD_STORE)."""
    if config.store == "s3":
        return S3Store(s3_client(config), config.bucket, config.prefix)
    if config.store == "incluster":
        from .incluster import InClusterStore

        try:
            return InClusterStore(
                config.store_dir,
                config.prefix,
                config.store_service,
                config.store_url,
                config.store_max_bytes,
            )
        except OSError as e:
            raise ConfigError(f"NBD_STORE_DIR={config.store_dir}: cannot use it ({e.strerror})") from e
    return _make_gcs_store(config, env)


def _make_gcs_store(config: Config, env: dict[str, str] | None) -> GCSStore:
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]
    from google.oauth2 import service_account

    env = dict(os.environ) if env is None else env
    emulator = env.get("STORAGE_EMULATOR_HOST")
    signing: Any = None
    if config.signing_key_file:
        signing = service_account.Credentials.from_service_account_file(config.signing_key_file)
    if emulator:
        if signing is None:
            raise ConfigError(
                "STORAGE_EMULATOR_HOST is set: NBD_SIGNING_KEY_FILE must name a key to sign with"
            )
        client = storage.Client(project=signing.project_id or "nbd", credentials=AnonymousCredentials())
        return GCSStore(client, config.bucket, config.prefix, signing)
    credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    client = storage.Client(project=project, credentials=credentials)
    if signing is None:
        email = config.signing_service_account
        if email is None:
            from google.auth.transport.requests import Request

            credentials.refresh(Request())
            email = getattr(credentials, "service_account_email", None)
        if not email or email == "default":
            raise ConfigError(
                "cannot sign URLs: set NBD_SIGNING_SERVICE_ACCOUNT (workload identity) or NBD_SIGNING_KEY_FILE"
            )
        signing = iam_signing_credentials(credentials, email)
    return GCSStore(client, config.bucket, config.prefix, signing)
