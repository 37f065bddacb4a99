"""`image_url` values -> decoded RGB images, within the server's limits.

Data URIs (`data:image/png;base64,...`) are always accepted. http(s) URLs are fetched only when the operator
allowed it, because fetching lets any client make this host send requests (to its internal network too).
"""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.request

from PIL import Image

from janus_adapters.server.errors import APIError
from janus_adapters.server.settings import ServerSettings
from janus_sdk.errors import ImageTooLargeError, InputError
from janus_sdk.images import load_image


def load_image_url(url: str, settings: ServerSettings, param: str) -> Image.Image:
    """Decode one image_url (blocking: call it from a thread); APIError 400 naming `param` when it is bad."""
    if url.startswith("data:"):
        data = _data_uri_bytes(url, param)
    elif url.startswith(("http://", "https://")):
        if not settings.allow_remote_images:
            raise APIError(
                400,
                f"{param}: http(s) image URLs are not accepted by this server; send the image "
                "inline as a data URI (data:image/png;base64,...)",
                param=param,
                code="remote_images_disabled",
            )
        data = _fetch(url, settings, param)
    else:
        raise APIError(
            400,
            f"{param}: an image URL must be a data URI (data:image/...;base64,...)"
            f"{' or an http(s) URL' if settings.allow_remote_images else ''}, got {url[:40]!r}",
            param=param,
            code="invalid_image_url",
        )
    try:
        return load_image(data, max_pixels=settings.max_image_pixels)
    except ImageTooLargeError as exc:
        raise APIError(
            400,
            f"{param}: the image has {exc.width}x{exc.height} = {exc.width * exc.height:,} pixels, more "
            f"than this server accepts ({exc.limit:,}); send a smaller image (the server's operator sets the "
            "limit with `janus serve --max-image-pixels`)",
            param=param,
            code="image_too_large",
        ) from None
    except InputError as exc:
        raise APIError(400, f"{param}: {exc}", param=param, code="invalid_image") from None


def _data_uri_bytes(url: str, param: str) -> bytes:
    header, comma, payload = url.partition(",")
    media_type, *options = header[len("data:") :].split(";")
    if not comma or "base64" not in options:
        raise APIError(
            400,
            f"{param}: the data URI must be base64-encoded (data:image/png;base64,...)",
            param=param,
            code="invalid_image_url",
        )
    if media_type and not media_type.startswith("image/"):
        raise APIError(
            400,
            f"{param}: the data URI holds {media_type!r}, not an image",
            param=param,
            code="invalid_image_url",
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(
            400, f"{param}: the data URI's base64 payload is invalid", param=param, code="invalid_image_url"
        ) from None
    if not data:
        raise APIError(400, f"{param}: the data URI holds no data", param=param, code="invalid_image_url")
    return data


def _fetch(url: str, settings: ServerSettings, param: str) -> bytes:
    """GET the URL, reading at most max_body_bytes (a remote image may be no larger than an inline one)."""
    request = urllib.request.Request(url, headers={"User-Agent": "janus-sdk-server"})
    try:
        with urllib.request.urlopen(request, timeout=settings.remote_image_timeout) as response:
            data: bytes = response.read(settings.max_body_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise APIError(
            400, f"{param}: could not fetch the image ({exc})", param=param, code="image_fetch_failed"
        ) from None
    if len(data) > settings.max_body_bytes:
        raise APIError(
            400,
            f"{param}: the remote image is larger than {settings.max_body_bytes} bytes",
            param=param,
            code="image_too_large",
        )
    return data
