"""No control flow by ``assert`` in the product: ``python -O`` strips every assert, so a
check that guards behaviour must be an ``if`` that raises or returns."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [ROOT / "operator" / "carbonaware", ROOT / "trainer" / "carbontrainer"]


def test_product_code_has_no_assert_statement() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for folder in PRODUCT
        for path in sorted(folder.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert found == []
