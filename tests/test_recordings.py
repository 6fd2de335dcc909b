"""The recordings the emulator is checked against live in the repository (tests/recordings/freeswitch),
so a clone alone runs the suite; where the shared originals lie beside the clone, the copy must not
have drifted from them."""
from __future__ import annotations

from pathlib import Path

import pytest

COPY = Path(__file__).resolve().parent / "recordings" / "freeswitch"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "freeswitch"


def test_the_copy_has_the_recordings_and_their_readme():
    names = {p.name for p in COPY.iterdir()}
    assert "README.md" in names and len([n for n in names if n.endswith(".esl")]) >= 20


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/fixtures beside this clone to compare with")
def test_the_copy_is_byte_for_byte_the_shared_recordings():
    shared = {p.name: p.read_bytes() for p in SHARED.iterdir() if p.is_file()}
    copy = {p.name: p.read_bytes() for p in COPY.iterdir() if p.is_file()}
    assert sorted(copy) == sorted(shared)
    assert [name for name in shared if copy[name] != shared[name]] == []
