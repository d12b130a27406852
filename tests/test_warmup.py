"""``qilin warmup``'s cache check looks where numba writes its cache."""

from __future__ import annotations

from pathlib import Path

import qilin.warmup as warmup


def test_cache_folder_matches_numbas_own_locator(monkeypatch, tmp_path: Path) -> None:
    from numba.core.caching import UserProvidedCacheLocator

    src = Path(warmup.__file__).resolve().parent / "factors" / "kernels_cpu.py"
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert warmup._cache_folder(src) == src.parent / "__pycache__"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    expected = tmp_path / UserProvidedCacheLocator.get_suitable_cache_subpath(str(src))
    assert warmup._cache_folder(src) == expected


def test_a_fresh_cache_dir_is_reported_missing(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert not warmup.kernels_cached()
    assert "factors/kernels_cpu.py" in warmup.missing_kernel_caches()
