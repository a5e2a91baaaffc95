"""The Workflows and Knowledge pages in a real browser: a Dify app run through the service API appears in the
run history, its graph (every DSL node, coloured by what ran) and per-node results match the stored run; a tiny
knowledge base lists its documents and the query box shows the same chunks and scores as the API."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

FIXTURES = Path(__file__).parents[2] / "workflow" / "fixtures"
DUAL_SWITCH = FIXTURES / "w1" / "dual_switch_aggregator_w1.yml"
DOCS = [("kettle.md", "# Kettle\nDescale the kettle every month with citric acid and rinse it twice."),
        ("bike.md", "# Bike\nPump the tyres to 4 bar and oil the chain after riding in the rain."),
        ("garden.md", "# Garden\nWater tomatoes at the roots in the morning; never wet the leaves.")]


def _post(server, path: str, body: dict, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else server.headers
    r = httpx.post(server.url + path, json=body, headers=headers, timeout=300)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_workflow_run_history_graph_and_nodes(console):
    from athanor.workflow.service_store import install_app

    server = console.server
    app_key, _ = install_app(DUAL_SWITCH, "dual_switch", force=True)  # as `athanor workflow import` does
    done = _post(server, "/v1/workflows/run", {"inputs": {"switch1": 1, "switch2": 0}, "response_mode": "blocking",
                                               "user": "console-test"}, key=app_key)
    run_id = done["workflow_run_id"]
    stored = httpx.get(f"{server.url}/v1/workflows/run/{run_id}", headers={"Authorization": f"Bearer {app_key}"},
                       timeout=30).json()
    assert stored["status"] == "succeeded"
    page = console.open("/ui/workflows")
    page.click('#apps a[data-app="dual_switch_w1"]')
    row = page.locator(f'#runs-table tr[data-run-id="{run_id}"]')
    row.wait_for()
    assert "succeeded" in row.inner_text()
    row.click()
    page.locator(f'#run-view .run-view[data-run-id="{run_id}"]').wait_for()
    dsl_nodes = {n["id"] for n in yaml.safe_load(DUAL_SWITCH.read_text())["workflow"]["graph"]["nodes"]}
    drawn = set(page.locator("#run-graph g.node").evaluate_all("gs => gs.map(g => g.dataset.nodeId)"))
    assert drawn == dsl_nodes
    assert page.locator("#run-graph path.edge").count() == 11
    ran = {n["node_id"] for n in stored["node_executions"] if n["status"] == "succeeded"}
    green = set(page.locator("#run-graph g.node.succeeded").evaluate_all("gs => gs.map(g => g.dataset.nodeId)"))
    assert green == ran and "off1" not in green and "on1" in green  # switch1=1 took the true branch only
    table = page.locator("#nodes-table tbody tr")
    assert table.count() == len(stored["node_executions"])
    assert [r.get_attribute("data-node-id") for r in table.all()] == [n["node_id"] for n in stored["node_executions"]]
    assert '"group1": "switch 1 on"' in page.inner_text("#run-outputs")
    console.shot("workflows")


def test_knowledge_base_documents_and_query_scores(console):
    server = console.server
    _post(server, "/v1/kb", {"name": "household", "chunk_size": 64, "chunk_overlap": 8})
    _post(server, "/v1/kb/household/documents", {"documents": [{"source": s, "text": t} for s, t in DOCS]})
    question = "how often should I descale the kettle"
    want = _post(server, "/v1/kb/household/query", {"query": question, "k": 3, "mode": "hybrid"})["hits"]
    page = console.open("/ui/knowledge")
    page.click('#kbs a[data-kb="household"]')
    page.locator('#docs-table tr[data-source="kettle.md"]').wait_for()
    assert sorted(page.locator("#docs-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.source)")) == \
        sorted(s for s, _ in DOCS)
    page.fill("#query", question)
    page.fill("#k", "3")
    page.click("#query-send")
    page.locator("#hits-table tbody tr").first.wait_for()
    rows = page.locator("#hits-table tbody tr").all()
    assert len(rows) == len(want) > 0
    for row, hit in zip(rows, want):
        assert row.locator("td.score").inner_text() == f"{hit['score']:.4f}"
        assert row.locator("td.source").inner_text() == hit["citation"]
        assert row.locator("td.chunk").inner_text().strip() == hit["text"].strip()
    assert want[0]["source"] == "kettle.md" and "kettle.md" in rows[0].inner_text()
    console.shot("knowledge")


def test_every_fixture_graph_lays_out_without_overlap():
    """The run graph's layout on every Dify DSL fixture (loops, iterations, branches): one box per node, inside
    the picture, no two boxes on top of each other, every edge drawn."""
    from athanor.serve.ui.graph_layout import NODE_H, NODE_W, layout
    from athanor.workflow.dsl import load_app

    files = sorted(FIXTURES.glob("*/*.yml"))
    assert len(files) >= 10
    for f in files:
        app = load_app(f)
        g = layout(app)
        assert {b.id for b in g.boxes} == set(app.nodes), f.name
        spots = {(b.x, b.y) for b in g.boxes}
        assert len(spots) == len(g.boxes), f"{f.name}: overlapping boxes"
        assert all(0 <= b.x and b.x + NODE_W <= g.width and 0 <= b.y and b.y + NODE_H <= g.height for b in g.boxes)
        assert len(g.edges) == sum(e.source in app.nodes and e.target in app.nodes for e in app.edges), f.name
