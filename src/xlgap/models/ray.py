"""Sharding model calls by item over Ray actors (``--ray ADDRESS --workers N``).

:class:`RayBackend` is an ordinary :class:`~xlgap.models.base.Backend`: it holds ``N``
actors, each with its own backend built from the same ``--model`` spec, splits the
requests of every ``generate``, ``score_batch`` and ``hidden_states`` call into one
contiguous shard per actor and puts the answers back in request order. Everything that
writes, the result store and the run directory, stays in the calling process behind
the unchanged :class:`~xlgap.models.cached.CachedBackend` and run loop, so each result
is written exactly once whatever happens to the workers.

Results do not depend on the sharding beyond float noise: the HF backend draws each
prompt's samples from a stream seeded by the run seed and the prompt's tokens, and a
batch's composition changes a score only in its last digits. So a run over Ray equals a
run without it (and shares its cache entries: the fingerprint is the model's own), except
that a sampled token can flip where two are nearly tied, as it can in one process when
a batch is split differently.

A worker that dies (killed, out of memory, its node lost) is restarted by Ray
(``max_restarts``) and the shard it held is sent again, to the next actor in turn, up
to ``max_retries`` times. An error raised *by the model* (a bad option, an
out-of-memory hint) is not a worker failure: retrying would fail the same way, so it is
raised at once, as the same exception class.

Ray is an optional dependency (``pip install 'xlgap[ray]'``); importing this module
does not need it, building a :class:`RayBackend` does.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xlgap.errors import BackendError, ConfigError
from xlgap.models import check_model_args, declared, load_backend, register_backend, registry
from xlgap.models.base import Backend

#: Environment variables a worker needs to find the same model cache and offline mode as
#: the driver (a local cluster inherits the environment; a remote one does not).
FORWARDED_ENV = ("PYTHONPATH", "XLGAP_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "TOKENIZERS_PARALLELISM")
#: Object store of a local cluster: shards are small (prompts, scores, pooled vectors),
#: and Ray's default (30% of memory) is a lot to reserve on a small shared machine.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``[start, stop)`` ranges covering ``range(n)``, sizes differing
    by at most one; empty ranges are left out (fewer requests than workers)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for k in range(parts):
        stop = start + base + (1 if k < extra else 0)
        if stop > start:
            bounds.append((start, stop))
        start = stop
    return bounds


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--ray needs the Ray package: pip install 'xlgap[ray]' (or "
                          "pip install ray)") from exc
    return ray


class _Worker:
    """One actor: one backend, built in the actor's process from the driver's spec."""

    def __init__(self, spec: str, options: dict[str, Any], threads: int | None,
                 known: dict[str, str], model_args: dict[str, Any] | None = None) -> None:
        # A constructor that raises kills the actor, and the driver would see only "actor
        # died"; the error (model not found, bad option) is kept and raised by every call
        # instead, so it reaches the user as itself.
        self.backend: Backend | None = None
        self.error: Exception | None = None
        try:
            if threads:
                # Each actor gets its share of the cores; torch would otherwise start one
                # thread per core in every actor and they would fight over them.
                import torch

                torch.set_num_threads(int(threads))
            # Backends the driver registered at run time (plugins, test doubles) exist in
            # its registry only; the worker is a fresh process.
            for prefix, target in known.items():
                register_backend(prefix, target)
            self.backend = load_backend(spec, model_args, **options)
        except Exception as exc:
            self.error = exc

    def _model(self) -> Backend:
        if self.backend is None:
            raise self.error or BackendError("the Ray worker holds no backend")
        return self.backend

    def describe(self) -> dict[str, Any]:
        b = self._model()
        try:
            n_layers: int | None = b.n_layers
        except NotImplementedError:
            n_layers = None
        return {"pid": os.getpid(), "fingerprint": b.fingerprint, "kind": b.kind,
                "is_chat": b.is_chat, "white_box": b.supports_white_box,
                "scores": b.can_score, "needs_gpu": b.needs_gpu, "n_layers": n_layers}

    def pid(self) -> int:
        return os.getpid()

    def generate(self, prompts: list[str], kwargs: dict[str, Any]) -> list[list[str]]:
        return self._model().generate(prompts, **kwargs)

    def score_batch(self, requests: list[tuple[str, list[str]]], normalize: str
                    ) -> list[list[float]]:
        return self._model().score_batch(requests, normalize=normalize)

    def hidden_states(self, texts: list[str], layers: list[int] | None, pooling: str
                      ) -> np.ndarray:
        return self._model().hidden_states(texts, layers, pooling)

    def chat_prompt(self, user_message: str) -> str:
        return self._model().chat_prompt(user_message)


class RayBackend(Backend):
    """A backend whose calls are sharded by request over ``workers`` Ray actors.

    ``address`` is ``"local"`` (start a single-node cluster in this process, shut down by
    :meth:`close`), or anything :func:`ray.init` accepts (``"auto"`` for a running
    cluster, ``"ray://HOST:10001"``); when Ray is already initialised it is used as is.
    ``threads`` is the torch threads per actor (default: this machine's CPUs divided by
    ``workers``); ``num_cpus`` and ``num_gpus`` are what each actor reserves from Ray
    (``num_gpus`` None: one per actor where the backend class declares ``needs_gpu``).
    ``options`` are the generic backend options and ``model_args`` the checked ones of
    :func:`~xlgap.models.load_backend`.

    Its capabilities are its workers' backend's, except that it does not run the model in
    this process (``in_process``: no steering hooks).
    """

    in_process = False

    def __init__(self, spec: str, options: dict[str, Any] | None = None, *,
                 model_args: dict[str, Any] | None = None,
                 address: str = "local", workers: int = 2, threads: int | None = None,
                 num_cpus: float | None = None, num_gpus: float | None = None,
                 max_restarts: int = 4, max_retries: int = 4,
                 retry_pause: float = 0.5) -> None:
        if declared(spec, "in_process") is False:
            raise ConfigError(f"--ray shards models that run in this process; {spec!r} is "
                              "served elsewhere and already concurrent (drop --ray, or scale "
                              "the server)")
        model_args = check_model_args(spec, model_args or {})
        if num_gpus is None:
            num_gpus = 1.0 if declared(spec, "needs_gpu") else 0.0
        if int(workers) < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        ray = _import_ray()
        self._ray = ray
        self.spec = spec
        self.workers = int(workers)
        self.max_retries = int(max_retries)
        self.retry_pause = float(retry_pause)
        #: shards sent again after their worker died (tests and reports read it)
        self.retried_shards = 0
        self._pending: dict[Any, int] = {}
        cpus = os.cpu_count() or 1
        self.threads = int(threads) if threads else max(1, cpus // self.workers)
        self._started_ray = False
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                    "runtime_env": {"env_vars": env} if env else None}
            if address in ("", "local"):
                # Enough logical CPUs for every actor's reservation, even when they
                # oversubscribe a small machine on purpose (a benchmark, a test).
                init.update(num_cpus=max(cpus, self.workers * self.threads),
                            object_store_memory=LOCAL_OBJECT_STORE_BYTES)
            else:
                init["address"] = address
            ray.init(**{k: v for k, v in init.items() if v is not None})
            self._started_ray = True
        if num_cpus is None:
            # A local cluster is sized above for these reservations; on another cluster
            # the driver's CPU count says nothing about the nodes', and a reservation no
            # node can hold would leave the actors unscheduled forever: reserve one.
            num_cpus = self.threads if self._started_ray and address in ("", "local") else 1
        actor_cls = ray.remote(_Worker).options(
            num_cpus=num_cpus, num_gpus=num_gpus,
            max_restarts=int(max_restarts), max_task_retries=0)
        opts = dict(options or {})
        # Backends the driver registered at run time exist in its registry only.
        known = registry()
        self._actors = [actor_cls.remote(spec, opts, self.threads, known, model_args)
                        for _ in range(self.workers)]
        try:
            infos = self._gather("describe", [((), {})] * self.workers)
        except Exception:
            self.close()
            raise
        prints = {info["fingerprint"] for info in infos}
        if len(prints) != 1:
            self.close()
            raise BackendError(f"the {self.workers} Ray workers loaded different models "
                               f"(fingerprints {sorted(prints)}); give every node the same "
                               "model files")
        self._info = infos[0]
        self.kind = str(self._info["kind"])
        self.is_chat = bool(self._info["is_chat"])
        self.white_box = bool(self._info["white_box"])  # type: ignore[misc]
        self.scores = bool(self._info["scores"])  # type: ignore[misc]
        self.needs_gpu = bool(self._info["needs_gpu"])  # type: ignore[misc]
        self.name = spec

    # -- identity: the model's own, so runs with and without Ray share cache entries ----
    @property
    def fingerprint(self) -> str:
        return str(self._info["fingerprint"])

    @property
    def n_layers(self) -> int:
        if self._info["n_layers"] is None:
            raise NotImplementedError(f"backend {self.kind!r} has no layers")
        return int(self._info["n_layers"])

    def chat_prompt(self, user_message: str) -> str:
        return self._gather("chat_prompt", [((user_message,), {})])[0]

    @property
    def in_flight(self) -> int:
        """Shards submitted and not yet collected."""
        return len(self._pending)

    def worker_pids(self) -> list[int]:
        """Process id of each actor (for monitoring, and for the tests that kill one)."""
        return self._gather("pid", [((), {})] * self.workers)

    # -- the three operations --------------------------------------------------------
    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_new_tokens: int = 16, seed: int = 0,
                 stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        kwargs = {"n": n, "temperature": temperature, "max_new_tokens": max_new_tokens,
                  "seed": seed, "stop": list(stop)}
        prompts = list(prompts)
        parts = self._sharded("generate", prompts, lambda shard: ((shard, kwargs), {}))
        return [row for part in parts for row in part]

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]],
                    normalize: str = "none") -> list[list[float]]:
        reqs = [(p, list(c)) for p, c in requests]
        parts = self._sharded("score_batch", reqs, lambda shard: ((shard, normalize), {}))
        return [row for part in parts for row in part]

    def hidden_states(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      pooling: str = "mean") -> np.ndarray:
        layer_list = None if layers is None else list(layers)
        texts = list(texts)
        if not texts:
            width = len(layer_list) if layer_list is not None else self.n_layers
            return np.zeros((0, width, 0), dtype=np.float32)
        parts = self._sharded("hidden_states", texts,
                              lambda shard: ((shard, layer_list, pooling), {}))
        return np.concatenate([np.asarray(p) for p in parts], axis=0)

    # -- dispatch --------------------------------------------------------------------
    def _sharded(self, method: str, items: list[Any],
                 call: Callable[[list[Any]], tuple[tuple[Any, ...], dict[str, Any]]]
                 ) -> list[Any]:
        """Split ``items`` into one contiguous shard per actor, run ``method`` on each and
        return the shards' results in order."""
        if not items:
            return []
        bounds = shard_bounds(len(items), self.workers)
        return self._gather(method, [call(items[a:b]) for a, b in bounds])

    def _gather(self, method: str, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
                ) -> list[Any]:
        """Run call ``k`` on actor ``k % workers`` (all in flight at once) and return the
        results in call order; a call whose actor died goes to the next actor in turn."""
        ray = self._ray
        results: list[Any] = [None] * len(calls)
        attempts = [0] * len(calls)
        pending: dict[Any, int] = {}
        self._pending = pending

        def submit(k: int) -> None:
            actor = self._actors[(k + attempts[k]) % len(self._actors)]
            args, kwargs = calls[k]
            pending[getattr(actor, method).remote(*args, **kwargs)] = k

        for k in range(len(calls)):
            submit(k)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            k = pending.pop(ref)
            try:
                results[k] = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                attempts[k] += 1
                if attempts[k] > self.max_retries:
                    self._cancel(pending)
                    raise BackendError(f"Ray worker failed {attempts[k]} times on a "
                                       f"{method} shard; giving up ({err})") from err
                self.retried_shards += 1
                # Ray restarts the dead actor in the background; a short pause keeps a
                # shard from bouncing between actors that are all restarting.
                time.sleep(self.retry_pause)
                submit(k)
            except ray.exceptions.RayTaskError as err:
                self._cancel(pending)
                # the model's own error, raised as itself so that the CLI prints it like
                # any local error (not wrapped in the worker's traceback)
                cause = getattr(err, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
        return results

    def _cancel(self, pending: dict[Any, int]) -> None:
        for ref in pending:
            # best effort: what cannot be cancelled finishes unused
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)

    def close(self) -> None:
        ray = self._ray
        for actor in getattr(self, "_actors", []):
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor, no_restart=True)
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
