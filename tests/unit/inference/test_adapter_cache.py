"""The adapter disk cache places a verified folder once per digest, whatever races it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.inference.adapter_cache import AdapterDiskCache
from tests.threads import at_once


def _staged(cache: AdapterDiskCache, body: bytes = b"weights") -> Path:
    folder = cache.staging()
    (folder / "adapter_model.safetensors").write_bytes(body)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_a_digest_already_in_place_keeps_its_folder_and_drops_the_new_copy(tmp_path):
    cache = AdapterDiskCache(tmp_path / "adapters", max_bytes=1 << 20)
    first = asyncio.run(cache.commit("abc", _staged(cache)))
    again = _staged(cache)
    assert asyncio.run(cache.commit("abc", again)) == first
    assert not again.exists() and (first / "adapter_model.safetensors").read_bytes() == b"weights"
    assert list(cache.tmp.iterdir()) == []


def test_two_versions_with_the_same_bytes_committed_at_once_both_succeed(tmp_path):
    # Two adapter versions with identical files share a digest; their loads are separate
    # single-flights, so both renames race for the same folder. The loser used to raise
    # "Directory not empty" and fail the request with INTERNAL.
    cache = AdapterDiskCache(tmp_path / "adapters", max_bytes=1 << 20)
    for round_ in range(20):
        digest = f"d{round_}"
        staged = [_staged(cache), _staged(cache), _staged(cache)]
        results, errors = at_once(
            [lambda s=s, d=digest: asyncio.run(cache.commit(d, s)) for s in staged]
        )
        assert errors == [] and set(results) == {cache.root / digest}
        assert not any(s.exists() for s in staged)
    assert list(cache.tmp.iterdir()) == []
