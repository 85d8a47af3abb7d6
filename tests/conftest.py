"""Shared fixtures: a tiny tokenizer and tiny random causal LMs built in-process (no download),
and the embedded model, converted once per test session for the integration tests."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_CORPUS = [
    "The capital of France is Paris.", "La capitale de la France est Paris.",
    "Die Hauptstadt von Frankreich ist Paris.", "Столица Франции — Париж.",
    "フランスの首都はパリです。", "法国的首都是巴黎。", "عاصمة فرنسا هي باريس.",
    "Q: What is the capital of Japan?\nA: Tokyo\n", "Berlin Madrid Rome Lisbon Vienna",
    "one two three four five six seven eight nine ten",
]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 3, trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[
        ("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def make_tiny_gemma(vocab_size: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=6,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        initializer_range=0.3)
    model = Gemma3ForCausalLM(config).to(dtype).eval()
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_backend(tiny_tokenizer):
    from xlgap.models.hf import HFBackend

    model = make_tiny_gemma(len(tiny_tokenizer))
    return HFBackend(model, tiny_tokenizer, name="tiny-gemma", batch_size=4)


@pytest.fixture(scope="session")
def embedded_backend():
    """The real embedded model (Gemma 3 270M), converted once into the session's cache."""
    from xlgap.models import load_backend

    return load_backend("embedded", batch_size=16)


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data in the layout of the workspace's ``../shared/data``, written by the project:
    ``bmlama17/`` (tests/bmlama_fixture.py: BMLAMA-17's published schema and quirks, 40
    facts) and ``flores100/`` (tests/fixtures/sentences: 40 parallel sentences in de, en,
    es, fr, it). No test reads the workspace's copy, so a fresh clone runs them all."""
    from bmlama_fixture import write_bmlama17

    root = tmp_path_factory.mktemp("data")
    write_bmlama17(root / "bmlama17")
    shutil.copytree(Path(__file__).parent / "fixtures" / "sentences", root / "flores100")
    return root


# -- registries and plugins --------------------------------------------------------------

# every module that holds a registry (xlgap.registry.Registry), imported before a test
# snapshots them
REGISTRY_MODULES = ("xlgap.models", "xlgap.data.formats", "xlgap.data.catalog",
                    "xlgap.interventions.strategies", "xlgap.stats.pairs",
                    "xlgap.report.sections", "xlgap.cli.registry", "xlgap.results")


def own_registry(request: pytest.FixtureRequest, registry) -> None:
    """What a test registers in ``registry`` (and the plugins it reads) stays in that test;
    xlgap's own lazy entries that the test imported stay imported (a module registers its
    entries once, on its first import)."""
    entries, targets, info = (dict(registry._entries), dict(registry._targets),
                              dict(registry._info))
    loaded = registry._plugins_loaded

    def restore() -> None:
        kept = {name: value for name, value in registry._entries.items()
                if isinstance(entries.get(name), str) and entries[name].startswith("xlgap.")
                and not isinstance(value, str)}
        registry._entries = {**entries, **kept}
        registry._targets, registry._info = targets, info
        registry._plugins_loaded = loaded

    request.addfinalizer(restore)


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   request: pytest.FixtureRequest):
    """Install a package the way pip leaves one: its module and a ``NAME-1.0.dist-info``
    folder with ``entry_points.txt``, in a folder on ``sys.path``. Every registry reads its
    entry points again; after the test, the package and what it added are gone."""
    from xlgap.registry import Registry

    for module in REGISTRY_MODULES:
        importlib.import_module(module)
    root = tmp_path / "site-packages"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for registry in Registry.instances:
        own_registry(request, registry)
        registry._plugins_loaded = False  # restored by own_registry
    installed: list[str] = []

    def install(name: str, source: str, entry_points: dict[str, dict[str, str]]) -> Path:
        (root / f"{name}.py").write_text(source, encoding="utf-8")
        dist = root / f"{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       "Version: 1.0\n", encoding="utf-8")
        lines = []
        for group, entries in entry_points.items():
            lines += [f"[{group}]", *(f"{k} = {v}" for k, v in entries.items()), ""]
        (dist / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
        importlib.invalidate_caches()
        for registry in Registry.instances:  # read again on the next question
            registry._plugins_loaded = False
        installed.append(name)
        return root

    yield install
    for name in installed:
        sys.modules.pop(name, None)
