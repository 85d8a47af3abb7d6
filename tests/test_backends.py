"""Backends by capability: the registry and its decorator, declared capabilities read
before a model is built, ``--model-arg`` / ``model_args``, vLLM's engine arguments, the
one ``cut_at_stop`` and the retry wait that honours Retry-After. All fast: no model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from tenacity import RetryCallState

import xlgap.cli
import xlgap.errors
import xlgap.models
from conftest import own_registry
from fake_backend import FakeBackend
from xlgap.cli.commands.sample import SampleConfig
from xlgap.cli.config import build_config, read_config_file
from xlgap.cli.registry import command_line
from xlgap.errors import ConfigError
from xlgap.models import (
    backend_class,
    check_model_args,
    declared,
    load_backend,
    parse_model_args,
    register_backend,
    split_spec,
)
from xlgap.models.base import Backend
from xlgap.models.openai import OpenAIBackend, wait_retry_after
from xlgap.models.openai.http import RETRY_AFTER_CAP, Transient
from xlgap.models.tokens import cut_at_stop
from xlgap.models.vllm_backend import CPU_MAX_MODEL_LEN, VLLMBackend, engine_kwargs


@pytest.fixture(autouse=True)
def _own_registry(request: pytest.FixtureRequest) -> None:
    # registrations made here stay here
    own_registry(request, xlgap.models.BACKENDS)


class Recorder(FakeBackend):
    """A fake that remembers the options it was built with."""

    white_box = False
    scores = True
    supports_white_box = Backend.supports_white_box  # FakeBackend's says True
    built: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, *, timeout: float = 60.0, concurrency: int = 8,
                 device: str = "cpu") -> None:
        super().__init__()
        Recorder.built = {"name": name, "timeout": timeout, "concurrency": concurrency,
                          "device": device}


# -- the registry ------------------------------------------------------------------------

def test_the_decorator_registers_a_class_and_load_backend_builds_it() -> None:
    @register_backend("rec")
    class Local(Recorder):
        pass

    backend = load_backend("rec:model-a", device="cuda", dtype="bf16", batch_size=2)
    assert isinstance(backend, Local)
    # generic options: only those its signature takes
    assert Recorder.built == {"name": "model-a", "timeout": 60.0, "concurrency": 8,
                              "device": "cuda"}
    assert backend_class("rec:anything") is Local
    assert split_spec("rec:a:b") == ("rec", "a:b")
    # a name without a registered prefix is a Hugging Face model; a bare registered name
    # is that backend without a model name
    assert split_spec("google/gemma-3-270m") == ("hf", "google/gemma-3-270m")
    assert split_spec("embedded") == ("embedded", None)
    with pytest.raises(ConfigError, match="rec:NAME"):
        load_backend("rec")


def test_a_decorated_factory_says_its_class_by_its_return_annotation() -> None:
    @register_backend("fac")
    def make(name: str, **options: Any) -> Recorder:
        return Recorder(name)

    @register_backend("anon")
    def anonymous(name: str, **options: Any):  # no return annotation: the point of the test
        return Recorder(name)

    assert isinstance(load_backend("fac:x"), Recorder)
    assert backend_class("fac:x") is Recorder and declared("fac:x", "scores") is True
    # no annotation: the class, so its capabilities, are unknown until it is built
    assert backend_class("anon:x") is None and declared("anon:x", "white_box") is None


def test_a_backend_is_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model onefile:NAME`` finds ``xlgap.models.onefile`` and its decorator: adding a
    backend touches no other file."""
    (tmp_path / "onefile.py").write_text(
        "from xlgap.models import register_backend\n"
        "from fake_backend import FakeBackend\n\n\n"
        "@register_backend('onefile')\n"
        "class OneFile(FakeBackend):\n"
        "    kind = 'onefile'\n"
        "    needs_gpu = True\n\n"
        "    def __init__(self, name: str, *, batch_size: int = 1) -> None:\n"
        "        super().__init__()\n"
        "        self.name, self.batch_size = name, batch_size\n", encoding="utf-8")
    monkeypatch.setattr(xlgap.models, "__path__", [*xlgap.models.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "xlgap.models.onefile", raising=False)
    backend = load_backend("onefile:abc", batch_size=3, device="cpu")
    assert backend.kind == "onefile" and (backend.name, backend.batch_size) == ("abc", 3)
    assert declared("onefile:abc", "needs_gpu") is True
    # a module of the package that registers nothing is not a backend
    assert split_spec("tokens:x") == ("hf", "tokens:x")


# -- capabilities --------------------------------------------------------------------------

def test_built_in_backends_declare_their_capabilities_without_being_built() -> None:
    assert (declared("openai:gpt", "white_box"), declared("openai:gpt", "in_process"),
            declared("openai:gpt", "caches_itself"), declared("openai:gpt", "scores")) == \
        (False, False, True, True)
    assert backend_class("vllm:any") is VLLMBackend  # without vLLM installed
    assert (declared("vllm:x", "white_box"), declared("vllm:x", "scores"),
            declared("vllm:x", "needs_gpu"), declared("vllm:x", "in_process")) == \
        (False, True, True, True)
    for spec in ("embedded", "some/hub-model", "hf:some/hub-model"):
        assert declared(spec, "white_box") is True and declared(spec, "caches_itself") is False
    with pytest.raises(ValueError, match="unknown capability"):
        declared("embedded", "flies")


def test_an_old_style_backend_that_overrides_supports_white_box_declares_it() -> None:
    assert FakeBackend.white_box is True  # it overrides the property, nothing else
    b = FakeBackend()
    assert b.supports_white_box and b.can_score

    class Blind(Backend):
        fingerprint = "blind"  # type: ignore[assignment]

        def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0,
                     stop=("\n",)):
            return [[""] * n for _ in prompts]

    assert not Blind().supports_white_box and not Blind().can_score


def test_a_study_skips_white_box_steps_by_capability_not_by_name(tmp_path: Path) -> None:
    """A black-box backend with an unremarkable prefix: its ``inside`` step is skipped
    because its class says it has no hidden states."""
    from xlgap.cli.study import load_study

    @register_backend("blackbox")
    class BlackBox(Recorder):
        pass

    data = tmp_path / "d.jsonl"
    data.write_text("", encoding="utf-8")
    study = tmp_path / "s.toml"
    study.write_text(f"""
[[models]]
model = "blackbox:m"
model_args = {{ timeout = 5 }}

[[models]]
model = "fake:m"

[[data]]
data = "{data}"

[inside]
k = 2
""", encoding="utf-8")
    register_backend("fake", "fake_backend:make")
    steps = {s.model.name: s for s in load_study(study).steps}
    assert "needs a white-box model" in steps["blackbox-m"].skip_reason
    assert "'blackbox'" in steps["blackbox-m"].skip_reason
    assert steps["fake-m"].skip_reason == ""
    assert steps["blackbox-m"].config.model_args == {"timeout": 5}
    study.write_text(study.read_text().replace("timeout = 5", "temprature = 5"))
    with pytest.raises(ConfigError, match=r"temprature.*'blackbox'.*concurrency, device, "
                                          r"timeout"):
        load_study(study)


# -- --model-arg -------------------------------------------------------------------------

def test_parse_model_args_reads_types_lists_and_tables() -> None:
    assert parse_model_args(["tensor_parallel_size=2,gpu_memory_utilization=0.85",
                             "enforce_eager=true", "revision=main", "quantization=none",
                             "max-model-len=4096"]) == {
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "enforce_eager": True,
        "revision": "main", "quantization": None, "max_model_len": 4096}
    # a part without "=" continues the value before it; later keys win; quotes keep strings
    assert parse_model_args("stop=a,b,timeout=3,timeout=4,tag='12'") == {
        "stop": "a,b", "timeout": 4, "tag": "12"}
    assert parse_model_args({"timeout": 30, "chat": False}) == {"timeout": 30, "chat": False}
    assert parse_model_args(None) == {} and parse_model_args([]) == {}
    for bad in ("novalue", "=3", "two words=1"):
        with pytest.raises(ConfigError, match="model-arg"):
            parse_model_args([bad])


def test_an_unknown_model_arg_names_the_backend_and_what_it_takes() -> None:
    assert check_model_args("openai:m", {"concurrency": 16, "timeout": 120}) == \
        {"concurrency": 16, "timeout": 120}
    with pytest.raises(ConfigError) as info:
        check_model_args("openai:m", {"concurency": 16})
    message = str(info.value)
    assert "concurency" in message and "'openai'" in message and "OpenAIBackend" in message
    assert "concurrency" in message and "max_retries" in message and "timeout" in message
    # the model name is not an option
    with pytest.raises(ConfigError, match="model"):
        check_model_args("openai:m", {"model": "x"})
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        check_model_args("vllm:m", {"tensor_parallel": 2})
    assert check_model_args("vllm:m", {"max_model_len": 2048}) == {"max_model_len": 2048}


def test_model_args_reach_the_backend_through_the_cli(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    register_backend("rec", f"{__name__}:Recorder")
    parser, commands = xlgap.cli.build_parser()
    args = parser.parse_args(["sample", "--model", "rec:m", "--model-arg", "timeout=2.5",
                              "--model-arg", "concurrency=3,device=cuda:1"])
    cfg = build_config(commands["sample"].config, args)
    assert cfg.model_args == {"timeout": 2.5, "concurrency": 3, "device": "cuda:1"}
    line = command_line("sample", {"model": "rec:m", "model_args": cfg.model_args},
                        SampleConfig)
    assert "--model-arg timeout=2.5 --model-arg concurrency=3" in line
    assert "--model-arg" not in command_line("sample", {"model_args": {}}, SampleConfig)
    # a config file's table, with the command line adding to it
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("model = 'rec:m'\n[model_args]\ntimeout = 9\nconcurrency = 1\n")
    args = parser.parse_args(["sample", "--model-arg", "concurrency=5"])
    cfg = build_config(SampleConfig, args, read_config_file(cfg_file))
    assert cfg.model_args == {"timeout": 9, "concurrency": 5}

    from xlgap.cli import workspace

    backend = workspace.open_backend(SampleConfig(model="rec:m", store=str(tmp_path / "st"),
                                                  device="cpu", model_args=cfg.model_args))
    # model_args win over the generic option of the same name, and the result is cached
    assert Recorder.built == {"name": "m", "timeout": 9, "concurrency": 5, "device": "cpu"}
    assert backend.inner.__class__ is Recorder and not backend.supports_white_box
    assert backend.can_score
    with pytest.raises(ConfigError, match="retries"):
        workspace.open_backend(SampleConfig(model="rec:m", store=str(tmp_path / "st"),
                                            model_args={"retries": 1}))


def test_open_backend_refuses_steering_and_ray_by_capability(tmp_path: Path) -> None:
    from xlgap.cli import workspace

    register_backend("rec", f"{__name__}:Recorder")
    with pytest.raises(xlgap.errors.XlgapError, match=r"--steer.*'rec'"):
        workspace.open_backend(SampleConfig(model="rec:m", store=str(tmp_path),
                                            steer="vectors.npz"))
    with pytest.raises(ConfigError, match="openai:m"):
        workspace.open_backend(SampleConfig(model="openai:m", store=str(tmp_path),
                                            base_url="http://127.0.0.1:9/v1", ray="local"))


def test_an_api_backend_caches_itself_and_is_not_wrapped(tmp_path: Path) -> None:
    from xlgap.cli import workspace

    backend = workspace.open_backend(SampleConfig(
        model="openai:m", base_url="http://127.0.0.1:9/v1", store=str(tmp_path),
        model_args={"concurrency": 2, "timeout": 7}))
    assert isinstance(backend, OpenAIBackend) and backend.caches_itself
    assert backend.concurrency == 2 and backend.http.timeout == 7.0
    assert backend._cache is not None and type(backend._cache).__name__ == "Store"


# -- vLLM ----------------------------------------------------------------------------------

def test_engine_kwargs_on_cpu_and_gpu() -> None:
    cpu = engine_kwargs("/m", on_cpu=True)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] is True
    assert cpu["max_model_len"] == CPU_MAX_MODEL_LEN == cpu["max_num_batched_tokens"]
    assert cpu["enable_chunked_prefill"] is False and "kv_cache_memory_bytes" in cpu
    gpu = engine_kwargs("/m", on_cpu=False, tensor_parallel_size=2,
                        gpu_memory_utilization=0.8, max_model_len=8192, max_num_seqs=64,
                        dtype="bf16", engine_args={"swap_space": 0})
    assert gpu == {"model": "/m", "dtype": "bfloat16", "tensor_parallel_size": 2,
                   "pipeline_parallel_size": 1, "enable_prefix_caching": True,
                   "enforce_eager": False, "seed": 0, "gpu_memory_utilization": 0.8,
                   "max_model_len": 8192, "max_num_seqs": 64, "swap_space": 0}
    assert "max_model_len" not in engine_kwargs("/m", on_cpu=False)
    with pytest.raises(ConfigError, match="--ray local --workers 2"):
        engine_kwargs("/m", on_cpu=False, data_parallel_size=2)


# -- stop strings and retries --------------------------------------------------------------

def test_cut_at_stop_is_one_rule_for_every_backend(tiny_backend) -> None:
    assert cut_at_stop("Paris.\nQ: next", ["\n"]) == "Paris."
    assert cut_at_stop("a;b\nc", ["\n", ";"]) == "a" == cut_at_stop("a;b\nc", [";", "\n"])
    assert cut_at_stop("abc", "b") == "a" and cut_at_stop("abc", []) == "abc"
    # an empty stop string is no stop (it would empty every completion): the HF backend's
    # own copy used to return "" here
    assert cut_at_stop("Paris", ["", "\n"]) == "Paris"
    # and the HF backend uses that rule: an empty stop string leaves its answers whole
    plain = tiny_backend.generate(["The capital of France is"], n=2, max_new_tokens=6,
                                  temperature=0.0, stop=("\n",))
    with_empty = tiny_backend.generate(["The capital of France is"], n=2, max_new_tokens=6,
                                       temperature=0.0, stop=("", "\n"))
    assert with_empty == plain and any(text for text in plain[0])


def _state(attempt: int, err: BaseException) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(err), err, None))
    return state


def test_the_retry_wait_honours_retry_after_and_backs_off_otherwise() -> None:
    wait = wait_retry_after(base=0.5, cap=30.0)
    backoff = [wait(_state(n, Transient("503"))) for n in (1, 2, 3, 4)]
    for n, delay in enumerate(backoff):
        assert 0.25 * 2 ** n <= delay <= 0.5 * 2 ** n  # jitter keeps at least half
    assert wait(_state(20, Transient("503"))) <= 30.0
    # the server's pause wins over a shorter backoff, and is capped
    assert wait(_state(1, Transient("429", retry_after=7.0))) == 7.0
    assert wait(_state(1, Transient("429", retry_after=1e6))) == max(30.0, RETRY_AFTER_CAP)
    assert wait(_state(6, Transient("429", retry_after=0.1))) >= 0.5 * 2 ** 5 / 2


def test_a_ray_worker_builds_its_backend_with_the_drivers_registry_and_model_args() -> None:
    """What each Ray actor runs, without Ray: the driver's registry (run-time
    registrations included) and the checked model_args reach the worker's backend."""
    from xlgap.models import registry
    from xlgap.models.ray import _Worker

    register_backend("rec", f"{__name__}:Recorder")
    worker = _Worker("rec:m", {"device": "cuda", "dtype": "bf16"}, None, registry(),
                     {"timeout": 3})
    info = worker.describe()
    assert Recorder.built == {"name": "m", "timeout": 3, "concurrency": 8, "device": "cuda"}
    assert (info["white_box"], info["scores"], info["needs_gpu"], info["n_layers"]) == \
        (False, True, False, 3)
    broken = _Worker("rec:m", {}, None, registry(), {"timout": 3})
    with pytest.raises(ConfigError, match="timout"):
        broken.describe()  # the worker keeps the error and raises it on every call
