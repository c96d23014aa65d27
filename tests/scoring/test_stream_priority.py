import pytest

from scoring.stream_priority import DEFAULTS, GREATEST, LEAST, stream_priority


def test_defaults_put_the_decoders_ahead_of_the_engine(monkeypatch):
    monkeypatch.delenv("BATCHSCORE_DECODE_STREAM_PRIORITY", raising=False)
    monkeypatch.delenv("BATCHSCORE_ENGINE_STREAM_PRIORITY", raising=False)
    assert stream_priority("decode") == DEFAULTS["decode"] == GREATEST
    assert stream_priority("engine") == DEFAULTS["engine"] == LEAST
    assert stream_priority("decode") < stream_priority("engine")  # lower runs first


def test_environment_overrides_each_role(monkeypatch):
    monkeypatch.setenv("BATCHSCORE_DECODE_STREAM_PRIORITY", " 0 ")
    monkeypatch.setenv("BATCHSCORE_ENGINE_STREAM_PRIORITY", "-5")
    assert stream_priority("decode") == 0
    assert stream_priority("engine") == -5


def test_bad_values_and_roles_are_named(monkeypatch):
    monkeypatch.setenv("BATCHSCORE_ENGINE_STREAM_PRIORITY", "high")
    with pytest.raises(ValueError, match="BATCHSCORE_ENGINE_STREAM_PRIORITY.*'high'"):
        stream_priority("engine")
    with pytest.raises(ValueError, match="stream role"):
        stream_priority("copy")
