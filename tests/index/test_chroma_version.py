"""The on-disk checks refuse a chromadb whose format they do not read, by name, instead of misdiagnosing."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3e_rag.errors import StoreError
from m3e_rag.index import chroma_version, doctor, integrity


def test_supported_range_is_the_installed_one() -> None:
    chroma_version.check_chroma_version()  # the test environment installs what pyproject allows
    chroma_version.check_chroma_version("1.5.0")
    for other in ("1.6.0", "1.4.9", "2.0.0", "0.6.3", "nightly"):
        with pytest.raises(StoreError, match=rf"chromadb {other} is installed; run: pip install 'chromadb>=1.5,<1.6'"):
            chroma_version.check_chroma_version(other)


def test_doctor_and_open_checks_refuse_another_chromadb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(chroma_version, "chroma_version", lambda: "1.7.2")
    with pytest.raises(StoreError, match="chromadb 1.7.2 is installed"):
        doctor.diagnose(tmp_path / "index")
    folder = tmp_path / "written"
    folder.mkdir()
    (folder / "m3e-rag.json").write_text("{}", encoding="utf-8")  # a folder m3e-rag wrote to
    with pytest.raises(StoreError, match="chromadb 1.7.2 is installed"):
        integrity.check_before_open(folder, "m3e_rag")
    with pytest.raises(StoreError, match="chromadb 1.7.2 is installed"):
        integrity.check_after_open(folder, "some-id", 3, "m3e_rag")
    integrity.check_before_open(tmp_path / "fresh", "m3e_rag")  # nothing written yet: nothing read, no refusal
