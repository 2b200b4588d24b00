"""The largest modules (lines) and functions (lines, decorators excluded) of a source tree, measured with ``ast``.

Usage: ``python benchmarks/code_size.py src/matchsig [--top 8]``
"""

from __future__ import annotations

import argparse
import ast
import pathlib


def sizes(root: pathlib.Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    modules, functions = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(root))
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    modules, functions = sizes(pathlib.Path(args.root))
    print("largest modules:", ", ".join(f"{n} {name}" for n, name in modules[: args.top]))
    print("largest functions:", ", ".join(f"{n} {name}" for n, name in functions[: args.top]))


if __name__ == "__main__":
    main()
