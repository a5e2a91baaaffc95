"""Real files of every supported type, written by the tests (PDF by hand, DOCX with python-docx)."""

from __future__ import annotations

import json
from pathlib import Path


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A minimal hand-written PDF: one Helvetica text line per page (pypdf extracts it back)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {len(objs)} 0 R >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path

def write_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Installation", level=1)
    d.add_paragraph("Run the installer and accept the licence.")
    d.add_heading("Troubleshooting", level=2)
    d.add_paragraph("If the kettle whistles, lower the flame.")
    d.save(str(path))
    return path

def write_corpus(folder: Path) -> dict[str, Path]:
    """One file of every supported type, each with a distinctive fact at a known location."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "txt": folder / "notes.txt",
        "md": folder / "guide.md",
        "html": folder / "page.html",
        "json": folder / "people.json",
        "jsonl": folder / "events.jsonl",
        "csv": folder / "cities.csv",
    }
    files["txt"].write_text("Shopping list for the week.\n\nThe giraffe at the zoo eats acacia leaves every morning.\n")
    files["md"].write_text("# Guide\n\nIntro paragraph.\n\n## Setup\n\nInstall the flux capacitor before driving"
                           " at eighty-eight miles per hour.\n\n### Notes\n\nKeep the plutonium in a lead box.\n")
    files["html"].write_text("<html><head><title>Sea facts title</title><style>p {color: red}</style></head><body>"
                             "<h1>Ocean</h1><p>Whales sing long songs.</p><h2>Reefs</h2>"
                             "<p>Coral reefs bleach when the water warms.</p><script>var x = 1;</script></body></html>")
    files["json"].write_text(json.dumps([{"name": "Ada", "role": "mathematician"},
                                         {"name": "Grace", "role": "admiral who found a moth in a relay"}]))
    files["jsonl"].write_text('{"event": "launch", "year": 1969}\n\n{"event": "volcano eruption", "year": 79}\n')
    files["csv"].write_text("city,country,fact\nParis,France,the Louvre is a museum\n"
                            "Reykjavik,Iceland,geysers erupt with boiling water\n")
    files["pdf"] = write_pdf(folder / "manual.pdf", ["Page one is about bicycles.",
                                                      "Page two explains how to patch a punctured tyre."])
    files["docx"] = write_docx(folder / "howto.docx")
    return files

