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


def _fake_package(root: Path, sources: bool = True) -> None:
    for rel in warmup.KERNEL_SOURCES:
        src = root / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        if sources:
            src.write_text("x = 1\n")
        cache = src.parent / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / f"{src.stem}.kernel-12.py311.nbi").write_bytes(b"index")
        (cache / f"{src.stem}.kernel-12.py311.1.nbc").write_bytes(b"code")
    (root / "backtest" / "__pycache__" / "other.cpython-311.pyc").write_bytes(b"pyc")


def test_an_edit_to_any_kernel_source_drops_every_kernel_cache(monkeypatch, tmp_path: Path
                                                               ) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    _fake_package(tmp_path)
    caches = sorted(tmp_path.glob("*/__pycache__/*.nb?"))
    assert len(caches) == 2 * len(warmup.KERNEL_SOURCES)
    # no stamp yet: the caches' sources are unknown, so they go
    assert sorted(warmup.drop_stale_kernel_caches(tmp_path)) == caches
    _fake_package(tmp_path, sources=False)  # compiled again from these sources
    assert warmup.drop_stale_kernel_caches(tmp_path) == []
    assert sorted(tmp_path.glob("*/__pycache__/*.nb?")) == caches
    # an edit to orders.py alone makes the sweep kernels' caches stale too
    (tmp_path / "kernels" / "orders.py").write_text("x = 2  # a longer file\n")
    removed = warmup.drop_stale_kernel_caches(tmp_path)
    assert sorted(removed) == caches
    assert (tmp_path / "backtest" / "__pycache__" / "other.cpython-311.pyc").exists()
    assert not list(tmp_path.glob("*/__pycache__/.*.tmp"))  # the stamp was written whole
    assert warmup.drop_stale_kernel_caches(tmp_path) == []


def test_every_module_numba_compiles_is_a_kernel_source() -> None:
    root = Path(warmup.__file__).resolve().parent
    compiled = {str(p.relative_to(root)) for p in root.rglob("*.py")
                if any(mark in p.read_text() for mark in ("njit(", "@core", "@nb.jit"))}
    compiled.discard("warmup.py")
    assert compiled - {"backtest/sweep_kernels_gpu.py", "factors/kernels_gpu.py"} <= set(
        warmup.KERNEL_SOURCES)
