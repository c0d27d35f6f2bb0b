"""Model presets (configs/presets/*.yaml) and the example deployment file (configs/example.yaml).

Each preset must load through the real settings loader, name the exact model id of the API page,
only use keys the server knows, pick the right output parser for its tokenizer, and pass vLLM only
engine arguments that vLLM 0.32 accepts and that the server does not already set itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from server.chat.sampling import _SAMPLING_KEYS
from server.model import load_model_info
from server.settings import FIELDS, PRESETS_DIR, ROOT, Settings, load_settings, preset_names

# The models of the API page, with what mistral-common / the model cards say about each:
# preset name -> (served id, tokenizer kind as in server.tinymodel.TOKENIZERS, output parser).
MODELS: dict[str, tuple[str, str, str]] = {
    "mistral-7b-instruct-v0.3": (
        "mistralai/Mistral-7B-Instruct-v0.3", "v3-spm", "mistral_pre_v11"),
    "mistral-small-instruct-2409": (
        "mistralai/Mistral-Small-Instruct-2409", "v3-spm", "mistral_pre_v11"),
    "mistral-small-3.1-24b-instruct-2503": (
        "mistralai/Mistral-Small-3.1-24B-Instruct-2503", "v7-tekken", "mistral_pre_v11"),
    "mistral-small-3.2-24b-instruct-2506": (
        "mistralai/Mistral-Small-3.2-24B-Instruct-2506", "v11-tekken", "mistral_v11"),
    "mistral-large-instruct-2411": (
        "mistralai/Mistral-Large-Instruct-2411", "v7-spm", "mistral_pre_v11"),
    "magistral-small-2506": (
        "mistralai/Magistral-Small-2506", "v11-tekken", "magistral_text_think"),
    "ministral-3-14b-reasoning-2512": (
        "mistralai/Ministral-3-14B-Reasoning-2512", "v13-tekken", "mistral_v13"),
}
REASONING_PARSERS = {"magistral_text_think", "mistral_v13"}
# Checkpoints with a vision encoder: these presets serve images.
VISION_CHECKPOINTS = {"mistral-small-3.1-24b-instruct-2503", "mistral-small-3.2-24b-instruct-2506",
                      "ministral-3-14b-reasoning-2512"}

# Every preset states each of these explicitly (a reader sees every choice in one file).
REQUIRED_KEYS = {"served_model_name", "max_model_len", "tensor_parallel_size", "reasoning",
                 "default_sampling", "capabilities", "engine_args", "reasoning_system_prompt"}
CAPABILITIES = {"chat", "function_calling", "reasoning", "vision"}

# AsyncEngineArgs fields that server/engine/vllm_engine.py already passes itself: the same key in
# engine_args would reach AsyncEngineArgs twice (TypeError: multiple values for keyword).
SET_BY_SERVER = {
    "model", "served_model_name", "tokenizer_mode", "max_model_len", "tensor_parallel_size",
    "pipeline_parallel_size", "dtype", "gpu_memory_utilization", "enforce_eager",
    "max_logprobs", "logits_processors", "structured_outputs_config", "max_num_seqs",
}

PRESETS = sorted(MODELS)


def raw(name: str) -> dict:
    return yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text())


def resolved(name: str, *extra: str) -> Settings:
    settings, _, _ = load_settings(["--preset", name, *extra], env={})
    return settings


def test_one_preset_per_api_page_model() -> None:
    assert preset_names() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_with_its_served_id(name: str) -> None:
    settings = resolved(name)
    assert settings.preset == name
    assert settings.served_model_name == MODELS[name][0]
    assert settings.model_id == MODELS[name][0]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_keys_are_settings_fields(name: str) -> None:
    data = raw(name)
    assert set(data) <= set(FIELDS)
    assert REQUIRED_KEYS <= set(data), f"missing: {REQUIRED_KEYS - set(data)}"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_values(name: str) -> None:
    s = resolved(name)
    assert s.max_model_len is not None and 4096 <= s.max_model_len <= 262144
    assert s.tensor_parallel_size in (1, 2, 4, 8)
    assert set(s.capabilities) == CAPABILITIES
    assert all(isinstance(v, bool) for v in s.capabilities.values())
    assert s.capabilities["chat"] and s.capabilities["function_calling"]
    # Vision is on exactly for the checkpoints that have an encoder, with Mistral's card limit.
    assert s.capabilities["vision"] is (name in VISION_CHECKPOINTS)
    if name in VISION_CHECKPOINTS:
        assert s.image_limit == 10 and "limit_mm_per_prompt" not in s.engine_args


@pytest.mark.parametrize("name", PRESETS)
def test_default_sampling_uses_keys_the_server_applies(name: str) -> None:
    s = resolved(name)
    assert set(s.default_sampling) <= set(_SAMPLING_KEYS) | {"max_tokens"}
    if "temperature" in s.default_sampling:
        assert 0 <= s.default_sampling["temperature"] <= 2
    if "top_p" in s.default_sampling:
        assert 0 < s.default_sampling["top_p"] <= 1
    if "max_tokens" in s.default_sampling:
        assert 1 <= s.default_sampling["max_tokens"] <= s.max_model_len


def test_vendor_sampling_defaults() -> None:
    assert resolved("magistral-small-2506").default_sampling == {
        "temperature": 0.7, "top_p": 0.95, "max_tokens": 40960}
    for name in ("mistral-small-3.1-24b-instruct-2503", "mistral-small-3.2-24b-instruct-2506"):
        assert resolved(name).default_sampling == {"temperature": 0.15}


@pytest.mark.parametrize("name", PRESETS)
def test_reasoning_settings(name: str) -> None:
    s = resolved(name)
    is_reasoning = MODELS[name][2] in REASONING_PARSERS
    assert s.capabilities["reasoning"] is is_reasoning
    assert s.reasoning == ("text_think" if name == "magistral-small-2506" else "auto")
    if name != "magistral-small-2506":
        assert s.reasoning_system_prompt is None


def test_magistral_system_prompt_is_the_documented_one() -> None:
    prompt = resolved("magistral-small-2506").reasoning_system_prompt
    assert prompt is not None
    assert prompt.startswith("A user will ask you to solve a task.")
    assert "<think>\nYour thoughts or/and draft" in prompt and "\n</think>\n" in prompt
    assert "NEVER use \\boxed{} in your response." in prompt  # one literal backslash
    assert prompt.endswith("Problem:\n\n")


@pytest.mark.parametrize("name", PRESETS)
def test_parser_follows_from_tokenizer(name: str, tokenizer_dirs: dict[str, Path]) -> None:
    """With a tokenizer of the model's version, the preset selects the model's output parser."""
    _, kind, parser = MODELS[name]
    settings = resolved(name, "--model", str(tokenizer_dirs[kind]))
    assert load_model_info(settings).parser_name == parser


@pytest.mark.parametrize("name", PRESETS)
def test_engine_args_are_mistral_format_and_not_set_twice(name: str) -> None:
    engine_args = resolved(name).engine_args
    assert engine_args["config_format"] == "mistral"
    assert engine_args["load_format"] == "mistral"
    assert not set(engine_args) & SET_BY_SERVER
    assert "language_model_only" not in engine_args  # vision checkpoints load their encoder


def test_engine_args_are_vllm_engine_args() -> None:
    arg_utils = pytest.importorskip("vllm.engine.arg_utils", reason="vLLM is not installed")
    fields = {f.name for f in dataclasses.fields(arg_utils.AsyncEngineArgs)}
    assert SET_BY_SERVER <= fields  # the list above still names real fields
    for name in PRESETS:
        unknown = set(resolved(name).engine_args) - fields
        assert not unknown, f"{name}: not AsyncEngineArgs fields: {sorted(unknown)}"


def test_example_config_loads() -> None:
    path = ROOT / "configs" / "example.yaml"
    data = yaml.safe_load(path.read_text())
    assert set(data) <= set(FIELDS)
    settings, sources, _ = load_settings(["--config", str(path)], env={})
    assert settings.preset in PRESETS
    assert settings.served_model_name == MODELS[settings.preset][0]
    assert settings.api_key_file is not None and settings.port == 8000
    assert sources["max_model_len"] == f"file {path}"
    # Dict settings merge with the preset's instead of replacing them.
    assert settings.engine_args["config_format"] == "mistral"
    assert "enable_prefix_caching" in settings.engine_args


def test_presets_are_documented() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for name in PRESETS:
        assert f"`{name}`" in doc, f"{name} missing from docs/deployment.md"


@pytest.mark.parametrize("kind", ["v13-tekken", "v11-tekken"])
def test_think_tokens_configure_the_engines_thinking_budget(kind: str, tokenizer_dirs: dict[str, Path]) -> None:
    """With [THINK]/[/THINK] control tokens, vLLM gets their ids for ``thinking_token_budget``
    (it would encode the strings as plain text); without them, no reasoning configuration."""
    pytest.importorskip("vllm.engine.arg_utils", reason="vLLM is not installed")
    from server.engine.vllm_engine import engine_args
    from server.runconfig import engine_config

    settings, _, _ = load_settings(["--model", str(tokenizer_dirs[kind])], env={})
    info = load_model_info(settings)
    config = engine_args(engine_config(settings, info)).reasoning_config
    think, end = info.vocab.special_id("[THINK]"), info.vocab.special_id("[/THINK]")
    if think is None:
        assert config is None
        return
    config.initialize_token_ids(None)  # vLLM's own start-up call: the ids are there already
    assert config.enabled
    assert (config.reasoning_start_token_ids, config.reasoning_end_token_ids) == ([think], [end])
