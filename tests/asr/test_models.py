import json
import shutil

import pytest

import asr


def test_named_model_assembles_and_verifies(model_cache):
    status = asr.verify_model("whisper-base", model_cache)
    assert status.ok, status.problems
    assert (status.path / "model.bin").stat().st_size == 145217607
    assert "whisper-base" in asr.available_manifests()


def test_unknown_name_says_what_is_known(tmp_path):
    with pytest.raises(asr.ModelError, match="known names: .*whisper-base"):
        asr.resolve_model("whisper-huge", tmp_path)


def test_directory_path_must_hold_a_model(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(asr.ModelError, match="missing model.bin"):
        asr.resolve_model(str(tmp_path / "m"), tmp_path)


def test_operator_supplied_directory_is_used_as_is(model_dir, tmp_path):
    assert asr.resolve_model(str(model_dir), tmp_path) == model_dir


def test_a_damaged_file_is_detected_and_reassembled(model_dir, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(model_dir, cache / "whisper-base")
    config = cache / "whisper-base" / "config.json"
    data = json.loads(config.read_text())
    data["_tampered"] = True
    config.write_text(json.dumps(data))
    status = asr.verify_model("whisper-base", cache)
    # the size changed, so resolve re-assembles from the installed packages; verify then passes
    assert status.ok, status.problems
    assert "_tampered" not in config.read_text()


def test_same_size_corruption_is_reported(model_dir, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(model_dir, cache / "whisper-base")
    vocab = cache / "whisper-base" / "vocabulary.json"
    raw = bytearray(vocab.read_bytes())
    raw[100] = ord("x") if raw[100] != ord("x") else ord("y")
    vocab.write_bytes(bytes(raw))
    status = asr.verify_model("whisper-base", cache)
    assert not status.ok
    assert any("vocabulary.json checksum" in p for p in status.problems)
