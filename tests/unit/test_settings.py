"""The one Settings object: layering, validation messages, secrets never printed."""

from __future__ import annotations

import pytest

from server.settings import SettingsError, describe, load_settings, redact_url


def test_precedence_cli_over_env_over_file_over_preset(tmp_path):
    config = tmp_path / "deploy.yaml"
    config.write_text("preset: mistral-7b-instruct-v0.3\nport: 9000\nmax_model_len: 2048\n")
    env = {"MSERVE_PORT": "9100", "MSERVE_MAX_NUM_SEQS": "8"}
    settings, sources, _ = load_settings(["--config", str(config), "--port", "9200"], env=env)
    assert settings.port == 9200 and sources["port"] == "cli"
    assert settings.max_num_seqs == 8 and sources["max_num_seqs"] == "env"
    assert settings.max_model_len == 2048 and sources["max_model_len"].startswith("file")
    assert settings.served_model_name == "mistralai/Mistral-7B-Instruct-v0.3"
    assert sources["served_model_name"].startswith("preset")


def test_unknown_keys_are_rejected_everywhere(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("prot: 1\n")
    with pytest.raises(SettingsError, match="unknown setting.*prot"):
        load_settings(["--config", str(config)], env={})
    with pytest.raises(SettingsError, match="MSERVE_PROT"):
        load_settings([], env={"MSERVE_PROT": "1"})
    with pytest.raises(SettingsError, match="unknown preset 'nope'"):
        load_settings(["--preset", "nope"], env={})
    with pytest.raises(SystemExit):
        load_settings(["--prot", "1"], env={})


def test_one_clear_message_per_mistake():
    with pytest.raises(SettingsError) as info:
        load_settings(["--port", "99999", "--gpu-memory-utilization", "2"], env={})
    message = str(info.value)
    assert "port" in message and "gpu_memory_utilization" in message
    assert message.count("\n") == 2  # a header and one line per mistake


def test_lists_dicts_and_booleans_from_env_and_cli():
    env = {"MSERVE_API_KEYS": "a, b", "MSERVE_ENGINE_ARGS": '{"seed": 3}', "MSERVE_METRICS_OPEN": "true"}
    settings, _, _ = load_settings(["--aliases", "x", "--aliases", "y", "--no-compact-json"], env=env)
    assert [k.get_secret_value() for k in settings.api_keys] == ["a", "b"]
    assert settings.engine_args == {"seed": 3} and settings.metrics_open is True
    assert settings.aliases == ["x", "y"] and settings.compact_json is False
    with pytest.raises(SettingsError, match="JSON object"):
        load_settings([], env={"MSERVE_ENGINE_ARGS": "{nope"})


def test_print_config_masks_keys_and_names_sources(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("secret-one\n\nsecret-two\n")
    settings, sources, show = load_settings(
        ["--print-config", "--api-keys", "secret-zero", "--api-key-file", str(keys)], env={})
    assert show
    text = describe(settings, sources)
    assert "secret" not in text and "<1 key(s)>" in text
    assert settings.resolved_api_keys() == ["secret-zero", "secret-one", "secret-two"]
    assert "(cli)" in text and "(default)" in text


def test_parallelism_is_checked_against_visible_gpus(monkeypatch):
    from server.runconfig import check_parallelism, visible_gpus

    settings, _, _ = load_settings(["--tensor-parallel-size", "4", "--pipeline-parallel-size", "2"], env={})
    with pytest.raises(SettingsError, match="needs 8 GPU.*4 are visible"):
        check_parallelism(settings, 4)
    check_parallelism(settings, 8)
    multi, _, _ = load_settings(["--tensor-parallel-size", "4", "--pipeline-parallel-size", "2",
                                 "--engine-args", '{"nnodes": 2}'], env={})
    check_parallelism(multi, 4)  # pipeline stages on other nodes
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert visible_gpus() == 2


def test_print_config_masks_the_store_password():
    url = "postgresql://mserve:hunter2@db.internal:5432/mserve"
    settings, sources, _ = load_settings(["--print-config"], env={"MSERVE_RESPONSES_STORE": url})
    text = describe(settings, sources)
    assert "hunter2" not in text and "postgresql://mserve:***@db.internal:5432/mserve" in text
    assert redact_url("postgres://u@h/db?sslmode=require&password=hunter2") == (
        "postgres://u@h/db?sslmode=require&password=***")
    for unchanged in ("sqlite", "sqlite:////var/lib/r.db", "postgresql://u@h:5432/db", "off"):
        assert redact_url(unchanged) == unchanged
