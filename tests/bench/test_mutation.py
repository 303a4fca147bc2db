"""The mutation bench finds each mutant's code by its snippet wherever it moved, and names each it cannot."""

from __future__ import annotations

from pathlib import Path

from bench.mutation import MUTANTS, TESTS, Mutant, locate


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for module in TESTS.values():
        for test in module:
            (root / test).mkdir(parents=True, exist_ok=True)
    return root


def test_a_snippet_is_found_in_whichever_file_now_holds_it(tmp_path: Path) -> None:
    root = tree(tmp_path, {"app/moved/here.py": "x = sorted(a)\n", "index/other.py": "y = 1\n"})
    mutant = Mutant("ranking", "x = sorted(a)", "x = sorted(a)[::-1]", "worst first")
    files, problems = locate(root, [mutant])
    assert (files, problems) == ([Path("app/moved/here.py")], [])


def test_every_snippet_gone_or_doubled_is_named(tmp_path: Path) -> None:
    root = tree(tmp_path, {"app/a.py": "twice()\n", "models/b.py": "twice()\n"})
    gone = Mutant("ranking", "rewritten()", "x", "gone one")
    doubled = Mutant("access", "twice()", "x", "doubled one")
    _, problems = locate(root, [gone, doubled])
    assert len(problems) == 2
    assert "mutant 1 [ranking] (gone one): snippet not found" in problems[0]
    assert "mutant 2 [access] (doubled one): snippet found 2 times" in problems[1]
    assert "app/a.py x1" in problems[1] and "models/b.py x1" in problems[1]


def test_a_module_whose_tests_are_gone_is_named(tmp_path: Path) -> None:
    root = tree(tmp_path, {"app/a.py": "once()\n"})
    missing = TESTS["filters"][0]
    (root / missing).rmdir()
    _, problems = locate(root, [Mutant("filters", "once()", "x", "r")])
    assert problems == [f"tests of filters: {missing} is gone"]


def test_each_mutant_changes_its_line_once_and_has_tests() -> None:
    assert all(m.original != m.mutated and m.module in TESTS for m in MUTANTS)
    assert len({(m.original, m.mutated) for m in MUTANTS}) == len(MUTANTS)
