"""ClusterManager: start or reach a Dask cluster and hand back a ``distributed.Client``.

Four kinds of cluster, one interface:

``local``
    ``LocalCluster`` with worker processes bound to 127.0.0.1 (the laptop default).
``threads``
    ``LocalCluster(processes=False)``: one process, a thread pool, no serialisation.
``cuda``
    ``dask_cuda.LocalCUDACluster``, one worker per visible GPU (needs ``qilin[gpu]``).
``remote``
    An existing ``dask scheduler`` reached by address or scheduler file, optionally over TLS.

``auto`` picks ``cuda`` when GPUs and dask-cuda are present and ``local`` otherwise. Every mode
prints the dashboard link and checks that client, scheduler and workers run the same versions
of python, dask, distributed, numpy, pandas and qilin.

Examples
--------
>>> with ClusterManager("threads", n_workers=1, threads_per_worker=1,
...                     dashboard_address=None, verbose=False) as client:
...     client.submit(sum, [1, 2, 3]).result()
6
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qilin.errors import ClusterError

if TYPE_CHECKING:
    from distributed import Client
    from distributed.security import Security

    from qilin.config import ClusterConfig, TLSConfig

log = logging.getLogger(__name__)

Mode = Literal["auto", "local", "threads", "cuda", "remote"]
MODES: tuple[str, ...] = ("auto", "local", "threads", "cuda", "remote")

#: Packages whose versions must agree between client, scheduler and workers.
CHECKED_PACKAGES: tuple[str, ...] = ("python", "dask", "distributed", "numpy", "pandas", "qilin")


def default_n_workers() -> int:
    """Worker count for a local cluster: the usable CPU cores, at most 4.

    Examples
    --------
    >>> 1 <= default_n_workers() <= 4
    True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def dask_cuda_available() -> bool:
    """True when ``dask_cuda`` imports (it is only installed with ``qilin[gpu]``)."""
    try:
        import dask_cuda  # type: ignore[import-not-found]  # noqa: F401
    except Exception:
        return False
    return True


def resolve_mode(mode: str) -> str:
    """Turn ``auto`` into ``cuda`` (GPUs and dask-cuda present) or ``local``; check names.

    Examples
    --------
    >>> resolve_mode("threads")
    'threads'
    >>> resolve_mode("gpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qilin.errors.ClusterError: unknown cluster mode 'gpu': expected one of auto, local, ...
    """
    if mode not in MODES:
        raise ClusterError(f"unknown cluster mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    from qilin.backend import gpu_count

    if gpu_count() > 0 and dask_cuda_available():
        return "cuda"
    return "local"


def _comparable(package: str, version: Any) -> str | None:
    """Python agrees at major.minor (pickle compatibility); packages must match exactly."""
    if version is None:
        return None
    text = str(version)
    if package == "python":
        return ".".join(text.split(".")[:2])
    return text


@dataclass(frozen=True)
class VersionMismatch:
    """One package whose version differs across client, scheduler and workers.

    Attributes
    ----------
    package : str
        Package name (``python`` compares major.minor).
    client : str or None
        Version on the client (None: not installed).
    scheduler : str or None
        Version on the scheduler.
    workers : dict
        Worker address to version, only for the workers that differ from the client.
    """

    package: str
    client: str | None
    scheduler: str | None
    workers: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        def show(v: str | None) -> str:
            return "not installed" if v is None else v

        parts = [f"client {show(self.client)}", f"scheduler {show(self.scheduler)}"]
        parts += [f"worker {addr} {show(v)}" for addr, v in sorted(self.workers.items())]
        return f"{self.package}: " + ", ".join(parts)


def version_mismatches(
    versions: dict[str, Any], packages: tuple[str, ...] = CHECKED_PACKAGES
) -> list[VersionMismatch]:
    """Compare the output of ``Client.get_versions(check=False)`` for ``packages``.

    Parameters
    ----------
    versions : dict
        ``{"client": {"packages": {...}}, "scheduler": {...}, "workers": {addr: {...}}}``.
    packages : tuple of str
        Package names to compare.

    Returns
    -------
    list of VersionMismatch
        Empty when everything agrees.

    Examples
    --------
    >>> pk = lambda **v: {"packages": v}
    >>> versions = {"client": pk(numpy="2.1.0", python="3.11.7.final.0"),
    ...             "scheduler": pk(numpy="2.1.0", python="3.11.2.final.0"),
    ...             "workers": {"tcp://w1:1": pk(numpy="1.26.4", python="3.11.7.final.0")}}
    >>> [str(m) for m in version_mismatches(versions, ("python", "numpy"))]
    ['numpy: client 2.1.0, scheduler 2.1.0, worker tcp://w1:1 1.26.4']
    """

    def get(entry: dict[str, Any] | None, package: str) -> str | None:
        if not entry:
            return None
        value = entry.get("packages", {}).get(package)
        return None if value is None else str(value)

    client = versions.get("client")
    scheduler = versions.get("scheduler")
    workers = versions.get("workers") or {}
    found = []
    for package in packages:
        reference = _comparable(package, get(client, package))
        sched = get(scheduler, package)
        differing = {
            addr: get(entry, package)
            for addr, entry in workers.items()
            if _comparable(package, get(entry, package)) != reference
        }
        if differing or _comparable(package, sched) != reference:
            found.append(VersionMismatch(package, get(client, package), sched, differing))
    return found


def security_from_tls(tls: TLSConfig) -> Security | None:
    """A client ``distributed.security.Security`` from TLS file paths, or None when unset.

    Raises
    ------
    ClusterError
        When a configured file does not exist (the message names the key and the path).
    """
    if not tls.enabled:
        return None
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(tls, key)
        if value and not Path(value).is_file():
            raise ClusterError(f"cluster.tls.{key}: file not found: {value}")
    from distributed.security import Security

    return Security(
        tls_ca_file=tls.ca_file or None,
        tls_client_cert=tls.cert_file or None,
        tls_client_key=tls.key_file or None,
        require_encryption=True,
    )


def _bounded_client_class() -> type[Client]:
    """A ``distributed.Client`` whose whole start (connect, handshake, registration) is
    bounded by its ``timeout``.

    ``Client(address, timeout=t)`` bounds the TCP connect but not the handshake read that
    follows it, so an endpoint that accepts and never answers holds the caller for minutes.
    This subclass runs the start under ``sync(..., callback_timeout=timeout)`` and closes the
    half-started client when that deadline passes.
    """
    global _BOUNDED_CLIENT
    if _BOUNDED_CLIENT is None:
        from distributed import Client

        class BoundedClient(Client):
            def start(self, **kwargs: Any) -> None:
                if not self.asynchronous:
                    kwargs.setdefault("callback_timeout", self._timeout)
                try:
                    super().start(**kwargs)
                except BaseException:
                    try:
                        self.close(timeout=min(self._timeout, 2.0))
                    except Exception:  # the connect error is the one to report
                        pass
                    raise

        _BOUNDED_CLIENT = BoundedClient
    return _BOUNDED_CLIENT


_BOUNDED_CLIENT: type[Client] | None = None


def _starting_in_spawned_child() -> bool:
    """True while a spawned worker process re-imports the user's main script."""
    main = sys.modules.get("__main__")
    return getattr(main, "__name__", "") == "__mp_main__"


class ClusterManager:
    """Start (or connect to) a Dask cluster; a context manager yielding a ``Client``.

    Parameters
    ----------
    mode : {"auto", "local", "threads", "cuda", "remote"}
        Which cluster; see the module docstring. ``auto`` resolves at :meth:`start`.
    n_workers : int, optional
        Local modes: workers to start (default :func:`default_n_workers`; ``threads``
        defaults to 1, ``cuda`` to one per GPU). Remote: wait until at least this many
        workers are connected (within ``timeout``).
    threads_per_worker : int, optional
        Threads per worker (local modes); default: dask's choice (``cuda``: 1).
    memory_limit : str or int
        Per-worker memory limit; ``"auto"`` lets dask divide the machine's memory.
    address : str, optional
        Remote scheduler address, e.g. ``tcp://10.0.0.5:8786`` or ``tls://...``.
    scheduler_file : str, optional
        Remote: the JSON file written by ``dask scheduler --scheduler-file``.
    security : Security or TLSConfig, optional
        TLS for a remote scheduler: a ``distributed.security.Security`` object, or the
        TLS file paths of :class:`qilin.config.TLSConfig`.
    dashboard_address : str or None
        Where local schedulers serve the dashboard; None disables it.
    timeout : float
        Seconds to wait for a scheduler (and for its workers) before raising.
    check_versions : bool
        Compare versions of :data:`CHECKED_PACKAGES` across client, scheduler and workers.
    strict_versions : bool
        Raise :class:`~qilin.errors.ClusterError` on a mismatch instead of warning.
    verbose : bool
        Also ``print`` the one-line summary with the dashboard link (it is always logged).

    Examples
    --------
    >>> cm = ClusterManager("threads", n_workers=1, dashboard_address=None, verbose=False)
    >>> client = cm.start()
    >>> d = cm.describe()
    >>> d["mode"], d["n_workers"]
    ('threads', 1)
    >>> cm.close()
    """

    def __init__(
        self,
        mode: Mode = "auto",
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        memory_limit: str | int = "auto",
        address: str | None = None,
        scheduler_file: str | os.PathLike[str] | None = None,
        security: Security | TLSConfig | None = None,
        dashboard_address: str | None = "127.0.0.1:0",
        timeout: float = 10.0,
        check_versions: bool = True,
        strict_versions: bool = False,
        verbose: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ClusterError(
                f"unknown cluster mode {mode!r}: expected one of {', '.join(MODES)}"
            )
        for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ClusterError(f"{name} must be a positive integer, got {value!r}")
        if not timeout > 0:
            raise ClusterError(f"timeout must be positive seconds, got {timeout!r}")
        if mode == "remote" and not (address or scheduler_file):
            raise ClusterError(
                "cluster mode 'remote' needs an address (tcp://host:8786) or a scheduler_file"
            )
        self.mode: str = mode
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.address = address or None
        self.scheduler_file = str(scheduler_file) if scheduler_file else None
        self.security = security
        self.dashboard_address = dashboard_address or None
        self.timeout = float(timeout)
        self.check_versions = check_versions
        self.strict_versions = strict_versions
        self.verbose = verbose
        self.resolved_mode: str | None = None
        self.version_mismatches: list[VersionMismatch] = []
        self._cluster: Any = None
        self._client: Client | None = None

    @classmethod
    def from_config(cls, cfg: ClusterConfig, **overrides: Any) -> ClusterManager:
        """Build from :class:`qilin.config.ClusterConfig`; keyword arguments win.

        Examples
        --------
        >>> from qilin.config import load_config
        >>> cm = ClusterManager.from_config(load_config(cluster="threads", env={}).cluster)
        >>> cm.mode, cm.n_workers
        ('threads', 1)
        """
        kwargs: dict[str, Any] = dict(
            mode=cfg.mode,
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            address=cfg.address or None,
            scheduler_file=cfg.scheduler_file or None,
            security=cfg.tls if cfg.tls.enabled else None,
            dashboard_address=cfg.dashboard_address or None,
            timeout=cfg.timeout_s,
            check_versions=cfg.check_versions,
            strict_versions=cfg.strict_versions,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a notebook that drops the manager still frees its cluster
        try:
            self.close()
        except Exception:
            pass

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._client is not None

    @property
    def client(self) -> Client:
        """The connected client (after :meth:`start`)."""
        if self._client is None:
            raise ClusterError("the cluster is not started: call start() or use 'with'")
        return self._client

    def start(self) -> Client:
        """Start or connect to the cluster and return its client (idempotent).

        Raises
        ------
        ClusterError
            The cluster could not be started or reached, or (with ``strict_versions``)
            versions disagree.
        """
        if self._client is not None:
            return self._client
        if _starting_in_spawned_child():
            raise ClusterError(
                "a cluster was started while a worker process was importing the main script: "
                "put the code that starts the cluster under `if __name__ == \"__main__\":`"
            )
        mode = resolve_mode(self.mode)
        self.resolved_mode = mode
        t0 = time.perf_counter()
        try:
            if mode == "remote":
                self._client = self._connect_remote()
            else:
                self._client = self._start_local(mode)
            if self.check_versions:
                self._check_versions()
        except BaseException:
            self.close()
            raise
        summary = self._summary(time.perf_counter() - t0)
        log.info(summary)
        if self.verbose:
            print(summary)
        return self._client

    def close(self) -> None:
        """Close the client and any cluster this manager started (idempotent)."""
        client, cluster = self._client, self._cluster
        self._client, self._cluster = None, None
        for thing in (client, cluster):
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as exc:  # closing must not mask the error that led here
                log.warning("error while closing %s: %s", type(thing).__name__, exc)

    # -- starting ---------------------------------------------------------------------------

    def _start_local(self, mode: str) -> Client:
        from distributed import Client

        common: dict[str, Any] = dict(
            threads_per_worker=self.threads_per_worker,
            memory_limit=self.memory_limit,
            dashboard_address=self.dashboard_address,
        )
        if self.dashboard_address is None:
            # Without a dashboard the scheduler still serves /health and /metrics, by default
            # on port 8787 of every interface: keep that on a free loopback port instead.
            common["scheduler_kwargs"] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
        try:
            if mode == "cuda":
                self._cluster = self._start_cuda(common)
            else:
                from distributed import LocalCluster

                if mode == "threads":
                    self._cluster = LocalCluster(
                        n_workers=self.n_workers or 1, processes=False, **common
                    )
                else:
                    self._cluster = LocalCluster(
                        n_workers=self.n_workers or default_n_workers(),
                        processes=True,
                        host="127.0.0.1",
                        **common,
                    )
            return Client(self._cluster, timeout=self.timeout)
        except ClusterError:
            raise
        except Exception as exc:
            hint = ""
            if mode in ("local", "cuda"):
                hint = (
                    " (in a script, start the cluster under `if __name__ == \"__main__\":` "
                    "so that worker processes can import it)"
                )
            raise ClusterError(f"could not start a {mode!r} cluster: {exc}{hint}") from exc

    def _start_cuda(self, common: dict[str, Any]) -> Any:
        from qilin.backend import gpu_count

        try:
            from dask_cuda import LocalCUDACluster  # type: ignore[import-not-found]
        except Exception as exc:
            raise ClusterError(
                f"cluster mode 'cuda' needs dask-cuda (pip install qilin[gpu]): {exc}"
            ) from None
        if gpu_count() < 1:
            raise ClusterError(
                "cluster mode 'cuda' needs at least one visible CUDA GPU (CuPy found none); "
                "use mode 'local' or 'auto'"
            )
        common = dict(common, threads_per_worker=self.threads_per_worker or 1)
        return LocalCUDACluster(n_workers=self.n_workers, host="127.0.0.1", **common)

    def _resolve_security(self) -> Security | None:
        from qilin.config import TLSConfig

        if isinstance(self.security, TLSConfig):
            return security_from_tls(self.security)
        return self.security

    def _wait_for_scheduler_file(self) -> str:
        path = Path(self.scheduler_file or "")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                address = json.loads(path.read_text())["address"]
                return str(address)
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                # The scheduler may still be writing it; anything else is reported below.
                if time.monotonic() >= deadline:
                    raise ClusterError(
                        f"scheduler file {path} has no scheduler address after "
                        f"{self.timeout:g} s (is `dask scheduler --scheduler-file {path}` "
                        "running?)"
                    ) from None
                time.sleep(0.05)
            except (OSError, TypeError) as exc:
                raise ClusterError(f"cannot read scheduler file {path}: {exc}") from None

    def _connect_remote(self) -> Client:
        security = self._resolve_security()
        address = self.address or self._wait_for_scheduler_file()
        if security is not None and "://" not in address:
            address = f"tls://{address}"
        source = f"scheduler file {self.scheduler_file} -> " if not self.address else ""
        try:
            client = _bounded_client_class()(address, security=security, timeout=self.timeout)
        except Exception as exc:
            raise ClusterError(
                f"no Dask scheduler answered at {source}{address} within {self.timeout:g} s: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if self.n_workers:
            try:
                client.wait_for_workers(self.n_workers, timeout=self.timeout)
            except Exception as exc:
                n_now = len(client.scheduler_info(n_workers=-1)["workers"])
                client.close()
                raise ClusterError(
                    f"scheduler {address} has {n_now} worker(s), fewer than the "
                    f"{self.n_workers} asked for after {self.timeout:g} s"
                ) from exc
        return client

    def _check_versions(self) -> None:
        versions = self.client.get_versions(check=False, packages=["qilin"])
        self.version_mismatches = version_mismatches(versions)
        if not self.version_mismatches:
            return
        lines = "\n  ".join(str(m) for m in self.version_mismatches)
        message = f"version mismatch between client, scheduler and workers:\n  {lines}"
        if self.strict_versions:
            raise ClusterError(message)
        log.warning(message)
        if self.verbose:
            print(f"WARNING: {message}")

    # -- reporting --------------------------------------------------------------------------

    @property
    def dashboard_link(self) -> str | None:
        """URL of the Dask dashboard, or None when it is disabled or unknown."""
        client = self.client
        scheduler = getattr(self._cluster, "scheduler", None)
        services = getattr(scheduler, "services", None)
        if self._cluster is not None and self.dashboard_address is None:
            return None
        if services is not None:
            # A scheduler in this process: report the address the dashboard is bound to.
            server = services.get("dashboard")
            if server is None:
                return None
            host = (self.dashboard_address or "").rpartition(":")[0].strip("[]")
            if host and host not in ("0.0.0.0", "::"):
                return f"http://{host}:{server.port}/status"
        try:
            link = client.dashboard_link
        except Exception:
            return None
        if not link or ":None/" in link or link.rstrip("/").endswith(":None"):
            return None
        return link

    def describe(self) -> dict[str, Any]:
        """Mode, scheduler address, workers, threads, memory and dashboard link.

        Returns
        -------
        dict
            ``mode``, ``scheduler_address``, ``n_workers``, ``threads``,
            ``memory_limit_bytes``, ``memory``, ``dashboard``, ``version_mismatches``.
        """
        from dask.utils import format_bytes

        client = self.client
        workers = client.scheduler_info(n_workers=-1)["workers"]
        memory = sum(int(w.get("memory_limit") or 0) for w in workers.values())
        return {
            "mode": self.resolved_mode,
            "scheduler_address": client.scheduler.address,
            "n_workers": len(workers),
            "threads": sum(int(w.get("nthreads", 0)) for w in workers.values()),
            "memory_limit_bytes": memory,
            "memory": format_bytes(memory) if memory else "unlimited",
            "dashboard": self.dashboard_link,
            "version_mismatches": [str(m) for m in self.version_mismatches],
        }

    def _summary(self, seconds: float) -> str:
        d = self.describe()
        return (
            f"qilin cluster [{d['mode']}] {d['scheduler_address']}: {d['n_workers']} workers, "
            f"{d['threads']} threads, memory {d['memory']}, started in {seconds:.1f} s; "
            f"dashboard: {d['dashboard'] or 'disabled'}"
        )

    def __repr__(self) -> str:
        state = "started" if self.started else "not started"
        target = f", address={self.address!r}" if self.mode == "remote" else ""
        return f"ClusterManager(mode={self.mode!r}{target}, {state})"
