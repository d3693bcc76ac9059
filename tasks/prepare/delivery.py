"""How a video reaches the provider: inline data URL, presigned URL, storage URI or public URL."""

from __future__ import annotations

import os
from urllib.parse import quote

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import ProviderConfig
from tasks.dialects.base import InlineData, VideoRef
from tasks.dialects.registry import mime_for
from tasks.discover.listing import SourceObject
from tasks.errors import ConfigError, SourceError
from tasks.prepare.body import CHUNK, placeholder

OBJECT_STORE_PROTOCOLS = {"s3", "s3a", "gs", "gcs"}


def check_delivery(fs: AbstractFileSystem, provider: ProviderConfig) -> None:
    """Refuse, before any call, a delivery mode the source storage cannot serve."""
    protocols = set(fs.protocol if isinstance(fs.protocol, (tuple, list)) else [fs.protocol])
    if provider.delivery == "presigned" and (isinstance(fs, LocalFileSystem) or not protocols & OBJECT_STORE_PROTOCOLS):
        raise ConfigError(f"provider.delivery: presigned needs an object store source (s3://, gs://) that can sign "
                          f"URLs; this source is {'/'.join(sorted(protocols))}. Use inline or public_url.")
    if provider.delivery == "storage_uri" and not protocols & OBJECT_STORE_PROTOCOLS:
        raise ConfigError(f"provider.delivery: storage_uri sends the object's s3:// or gs:// URI, but this source "
                          f"is {'/'.join(sorted(protocols))}. Use inline or public_url.")


def video_ref(fs: AbstractFileSystem, obj: SourceObject, provider: ProviderConfig) -> VideoRef:
    """The reference for one object in the provider's delivery mode (inline data is read only while sending)."""
    name = obj.path.rsplit("/", 1)[-1]
    mode = provider.delivery
    try:
        if mode == "inline":
            data = InlineData(lambda: fs.open(obj.path, "rb", block_size=CHUNK), obj.size,
                              mime_for(provider.dialect, obj.ext), obj.uri)
            return VideoRef(url=placeholder(), ext=obj.ext, file_name=name, inline=data)
        if mode == "presigned":
            url = fs.sign(obj.path, expiration=provider.presign_expires_s)
        elif mode == "storage_uri":
            url = obj.uri
        else:
            base = provider.public_base_url
            assert base is not None, "ProviderConfig refuses delivery public_url without public_base_url"
            url = f"{base.rstrip('/')}/{quote(obj.rel)}"
    except FileNotFoundError:
        raise SourceError(f"{obj.uri}: vanished between listing and sending") from None
    except OSError as e:
        raise SourceError(f"{obj.uri}: could not be read for {mode} delivery: {type(e).__name__}: {e}") from None
    return VideoRef(url=url, ext=obj.ext, file_name=name)


def local_ref(path: str, ext: str, name: str, provider: ProviderConfig) -> VideoRef:
    """Inline delivery of a prepared local file (a cut, transcoded or shrunk copy)."""
    data = InlineData(lambda: open(path, "rb"), os.path.getsize(path), mime_for(provider.dialect, ext), name)
    return VideoRef(url=placeholder(), ext=ext, file_name=name, inline=data)
