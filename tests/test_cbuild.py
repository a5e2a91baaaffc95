"""cbuild.py's cache key: a kernel source is rebuilt when a header it includes with quotes changes."""

from __future__ import annotations

import pytest

from athanor import cbuild

_CANNOT_BUILD = cbuild.cpu_reason() or (None if cbuild.compiler() else "no C compiler (cc, gcc or $CC)")


def _write(tmp_path, value: int) -> None:
    (tmp_path / "value.h").write_text(f"#define VALUE {value}\n")
    (tmp_path / "k.c").write_text('#include "value.h"\nint athk_value(void) { return VALUE; }\n')


@pytest.mark.skipif(_CANNOT_BUILD is not None, reason=_CANNOT_BUILD or "")
def test_a_changed_header_builds_a_new_library(tmp_path, monkeypatch):
    monkeypatch.setenv("ATHANOR_KERNEL_CACHE", str(tmp_path / "cache"))
    _write(tmp_path, 7)
    lib, reason = cbuild.load(tmp_path / "k.c")
    assert reason is None and lib.athk_value() == 7
    _write(tmp_path, 9)  # the .c file is byte for byte the same; only its header changed
    lib2, reason = cbuild.load(tmp_path / "k.c")
    assert reason is None and lib2.athk_value() == 9
    assert len(list((tmp_path / "cache").glob("k-*.so"))) == 2


def test_the_key_reads_quoted_includes_only_once_and_skips_system_headers(tmp_path):
    (tmp_path / "a.h").write_text('#include "b.h"\n')
    (tmp_path / "b.h").write_text('#include "a.h"\n')  # a cycle ends
    (tmp_path / "k.c").write_text('#include <stdio.h>\n#include "a.h"\n')
    data = cbuild._source_bytes(tmp_path / "k.c")
    assert data.count(b'#include "b.h"') == 1 and data.count(b'#include "a.h"') == 2
