import pytest

from conftest import REPO, pair, write_config, write_lines
from relevel.config import load_config
from relevel.errors import ConfigError


def test_unknown_key_names_file_and_key_with_a_hint(tmp_path):
    path = write_config(tmp_path / "c.yaml", "train.jsonl", extra="")
    path.write_text(path.read_text().replace("runtime:", "runtim:"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value) and "key 'runtim': unknown key; did you mean 'runtime'?" in str(error.value)
    path.write_text(path.read_text().replace("fields:", "feilds:"))
    with pytest.raises(ConfigError, match=r"key 'data.feilds': unknown key; did you mean 'fields'"):
        load_config(path)


def test_wrong_type_and_missing_key(tmp_path):
    path = write_config(tmp_path / "c.yaml", "train.jsonl", chunk_size="many")
    with pytest.raises(ConfigError, match=r"key 'runtime.chunk_size': Input should be a valid integer"):
        load_config(path)
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"key 'scale': required, missing"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_paths_resolve_against_config_folder_then_cwd(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    beside = write_lines(tmp_path / "cfg" / "train.jsonl", [pair(1)])
    assert load_config(write_config(tmp_path / "cfg" / "c.yaml", "train.jsonl")).data.train == beside
    monkeypatch.chdir(tmp_path)
    in_cwd = write_lines(tmp_path / "other.jsonl", [pair(1)])
    assert load_config(write_config(tmp_path / "cfg" / "d.yaml", "other.jsonl")).data.train == in_cwd


def test_shipped_configs_load():
    demo = load_config("builtin:demo/demo.yaml")
    assert demo.scale.num_levels == 4 and demo.data.train.is_file() and demo.data.unlabeled.is_file()
    assert load_config(REPO / "configs" / "demo.yaml") == demo
    qbqtc = load_config(REPO / "configs" / "qbqtc.yaml")
    assert qbqtc.scale.num_levels == 3 and qbqtc.data.document.fields == ("title",)
    for shipped in sorted((REPO / "configs").glob("*.yaml")):  # every shipped config loads
        assert load_config(shipped).scale.num_levels in (3, 4), shipped


def test_a_config_extends_another_in_its_folder(tmp_path):
    quick = load_config(REPO / "configs" / "qbqtc-ablation-quick.yaml")
    assert quick.name == "qbqtc" and quick.experiment.variants == ("real", "ssra")
    assert quick.generator.max_examples == 12000 and quick.synthesis.documents_per_round == 2500  # inherited
    assert quick.data.train == (REPO.parent / "shared" / "data" / "qbqtc" / "train.json").resolve()
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("extends: nowhere.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="key 'extends': no config file"):
        load_config(orphan)
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    orphan.write_text("extends: broken.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(orphan)
    (tmp_path / "loop.yaml").write_text("extends: orphan.yaml\n", encoding="utf-8")
    orphan.write_text("extends: loop.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="in a loop"):
        load_config(orphan)


def test_bad_config_files_name_the_file_and_what_is_wrong(tmp_path):
    path = write_config(tmp_path / "c.yaml", "train.jsonl")
    good = path.read_text(encoding="utf-8")
    path.write_text(good + "name: again\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML: key 'name' is given twice\s+in .*line 13"):
        load_config(path)
    path.write_text(good.replace("runtime: {", "runtime: {chunk_size: 3, "), encoding="utf-8")
    with pytest.raises(ConfigError, match="key 'chunk_size' is given twice"):
        load_config(path)
    path.write_bytes(b"\xef\xbb\xbf" + good.encode())  # a BOM is fine
    assert load_config(path).name == "test"
    path.write_bytes(good.encode().replace(b"name: test", b"name: \xff\xfe"))
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML: 'utf-8' codec can't decode byte 0xff"):
        load_config(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="c.yaml: expected a mapping"):
        load_config(path)
    path.write_text(good + "scael: 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="key 'scael': unknown key; did you mean 'scale'"):
        load_config(path)


def test_rewrite_takes_the_shared_endpoint_and_needs_one(tmp_path):
    path = write_config(tmp_path / "c.yaml", "train.jsonl")
    base = path.read_text()
    path.write_text(base + "rewrite: {fields: [title, asr]}\n")
    with pytest.raises(ConfigError, match="rewrite needs an LLM endpoint"):
        load_config(path)
    path.write_text(base + "rewrite: {fields: [title, asr]}\nllm: {base_url: 'http://127.0.0.1:1/v1', model: m}\n")
    config = load_config(path)
    assert config.rewrite.llm == config.llm and config.rewrite.output == "video_text"
