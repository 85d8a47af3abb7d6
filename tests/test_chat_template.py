"""Chat models: ``--chat-template`` decides whether prompts go through the tokenizer's
chat template, and a chat model runs the same analyses (sampled and exact) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_gemma
from test_interventions import write_data
from xlgap.cli.commands.sample import SampleConfig
from xlgap.errors import ModelError, XlgapError
from xlgap.prompting.templates import PromptBuilder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEMPLATE = ("{% for m in messages %}<turn>{{ m['role'] }}\n{{ m['content'] }}</turn>\n"
            "{% endfor %}{% if add_generation_prompt %}<turn>model\n{% endif %}")


def _save_model(tiny_tokenizer, path: Path, template: str | None) -> Path:
    model = make_tiny_gemma(len(tiny_tokenizer))
    tiny_tokenizer.chat_template = template
    try:
        model.save_pretrained(path)
        tiny_tokenizer.save_pretrained(path)
    finally:
        tiny_tokenizer.chat_template = None  # the session fixture stays a base tokenizer
    return path


def _backend(model: Path, chat_template: str, tmp_path: Path):
    from xlgap.cli.workspace import open_backend

    return open_backend(SampleConfig(model=str(model), chat_template=chat_template,
                                     store=str(tmp_path / "store")))


def test_the_option_decides_and_auto_reads_the_name(tiny_tokenizer, tmp_path) -> None:
    it_model = _save_model(tiny_tokenizer, tmp_path / "tiny-it", TEMPLATE)
    base_named = _save_model(tiny_tokenizer, tmp_path / "tiny-base", TEMPLATE)
    assert _backend(it_model, "auto", tmp_path).is_chat is True
    assert _backend(it_model, "no", tmp_path).is_chat is False
    assert _backend(base_named, "auto", tmp_path).is_chat is False
    assert _backend(base_named, "yes", tmp_path).is_chat is True


def test_asking_for_a_template_the_tokenizer_lacks_is_an_error(tiny_tokenizer, tmp_path):
    model = _save_model(tiny_tokenizer, tmp_path / "plain", None)
    with pytest.raises(ModelError, match="chat template"):
        _backend(model, "yes", tmp_path)
    with pytest.raises(XlgapError, match="no such file"):
        _backend(model, str(tmp_path / "missing.jinja"), tmp_path)


def test_a_template_file_serves_a_tokenizer_without_one(tiny_tokenizer, tmp_path):
    """The shipped Gemma turn format, given as a file to a model whose tokenizer has no
    template (as the embedded model's GGUF conversion)."""
    from xlgap.data import load_dataset

    model = _save_model(tiny_tokenizer, tmp_path / "plain", None)
    backend = _backend(model, str(EXAMPLES / "chat-templates" / "gemma-turns.jinja"),
                       tmp_path)
    assert backend.is_chat
    dataset = load_dataset(write_data(tmp_path / "colors.jsonl", n=2, langs=["en", "fr"]))
    prompt = PromptBuilder(backend, dataset.items, shots=1).generation_prompt(
        dataset.items[0], "fr")
    assert prompt.startswith("<bos><start_of_turn>user\n")
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert backend.encode(prompt)[:2] != [2, 2]  # BOS once: it is in the text already


def test_a_chat_model_is_sampled_and_scored_through_its_template(tiny_tokenizer, tmp_path):
    import xlgap.cli
    from xlgap.data import load_dataset

    model = _save_model(tiny_tokenizer, tmp_path / "tiny-chat", TEMPLATE)
    data = write_data(tmp_path / "colors.jsonl", n=6, langs=["en", "fr", "ja"])
    backend = _backend(model, "yes", tmp_path)
    dataset = load_dataset(data)
    prompt = PromptBuilder(backend, dataset.items, shots=1).scoring_prompt(
        dataset.items[0], "fr")
    assert prompt.prompt.startswith("<turn>user\n") and prompt.prompt.endswith("<turn>model\n")

    common = ["--model", str(model), "--chat-template", "yes", "--data", str(data),
              "--store", str(tmp_path / "store"), "--no-progress", "--n-boot", "50"]
    assert xlgap.cli.run(["sample", *common, "--exact", "--out", str(tmp_path / "exact")]) == 0
    rows = [json.loads(line) for line in
            (tmp_path / "exact" / "distributions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 * 3
    for row in rows:
        assert np.isclose(sum(row["probs"]), 1.0, atol=1e-6)
    assert xlgap.cli.run(["sample", *common, "--samples", "3", "--max-new-tokens", "4",
                          "--out", str(tmp_path / "sampled")]) == 0
    diagnosis = json.loads((tmp_path / "sampled" / "diagnosis.json").read_text())
    assert set(diagnosis["pairs"]) == {"fr", "ja"}
    run = json.loads((tmp_path / "sampled" / "run.json").read_text())
    assert run["config"]["chat_template"] == "yes"
