"""The Models page in a real browser: the store as /api/tags lists it (size, quantization), the context length
from /api/show, what is loaded (/api/ps, with memory) after a chat, and a derived model's lineage."""

from __future__ import annotations

import httpx


def _api(server, method: str, path: str, **kw) -> dict:
    r = httpx.request(method, server.url + path, headers=server.headers, timeout=300, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def test_store_lists_smollm2_with_size_and_quantization(console):
    server = console.server
    tags = {m["name"]: m for m in _api(server, "GET", "/api/tags")["models"]}
    smol = next(name for name in tags if name.startswith("smollm2"))
    page = console.open("/ui/models")
    row = page.locator(f'#models-table tr[data-model="{smol}"]')
    row.wait_for()
    assert row.locator("td.quant").inner_text() == tags[smol]["details"]["quantization_level"] == "Q4_1"
    assert row.locator("td.size").get_attribute("title") == f"{tags[smol]['size']} bytes"
    assert row.locator("td.size").inner_text().endswith("MB")
    assert page.locator("#models-table tbody tr").count() == len(tags)
    info = _api(server, "POST", "/api/show", json={"model": smol})
    context = next(v for k, v in info["model_info"].items() if k.endswith(".context_length"))
    page.wait_for_function(f"document.querySelector('#models-table tr[data-model=\"{smol}\"] td.context')"
                           f".textContent === '{context}'")
    console.shot("models")


def test_loaded_models_after_a_chat(console):
    server = console.server
    _api(server, "POST", "/v1/chat/completions", json={"model": "tiny", "max_tokens": 2,
                                                        "messages": [{"role": "user", "content": "hi"}]})
    loaded = {m["name"]: m for m in _api(server, "GET", "/api/ps")["models"]}
    assert "tiny" in loaded
    page = console.open("/ui/models")
    row = page.locator('#loaded-table tr[data-model="tiny"]')
    row.wait_for()
    assert row.locator("td.memory").get_attribute("title") == f"{loaded['tiny']['size']} bytes"


def test_lineage_of_a_derived_model(console, tiny_hf_dir):
    server = console.server
    _api(server, "POST", "/api/create", json={"model": "tiny-pirate", "from": "tiny", "system": "Talk like a pirate.",
                                               "stream": False})
    page = console.open("/ui/models")
    page.click('#models-table tr[data-model="tiny-pirate"]')
    page.locator("#detail-lineage .lineage-self").wait_for()
    assert page.inner_text("#detail-name") == "tiny-pirate"
    # outermost first: the HF folder tiny was created FROM, then tiny, then the model itself inside
    chain = [t.strip() for t in page.locator("#detail-lineage .lineage-parent > .mono").all_inner_texts()]
    assert chain == [str(tiny_hf_dir), "tiny"]
    assert page.inner_text("#detail-lineage .lineage-self > strong").startswith("tiny-pirate")
    page.locator("#model-detail").scroll_into_view_if_needed()
    console.shot("models-lineage")
    smol = page.locator("#models-table tr[data-model^=smollm2]").first
    smol.click()  # the built-in model: nothing recorded, and the page says so
    page.wait_for_function("document.getElementById('detail-name').textContent.startsWith('smollm2')")
    page.locator("#detail-lineage p.muted").wait_for()
