"""The package's folders are the pipeline's stages: no folder imports from a later one."""

import ast
from pathlib import Path

import blspeech

# Bottom to top, as README's Layout section lists them.
STAGES = ["errors", "devices", "io", "frontend", "text", "data", "models", "decoding", "gmm",
          "scoring", "inference", "training", "adapters", "corpora", "cli"]
ROOT = Path(blspeech.__file__).parent


def _imports(path: Path) -> list[str]:
    """Every blspeech module ``path`` imports, at module level or inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the tree uses absolute ones)"
            if node.module and node.module.startswith("blspeech"):
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("blspeech")]
    return out


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_top_level_module_has_a_stage():
    names = {p.stem for p in ROOT.iterdir() if p.suffix == ".py" or
             (p.is_dir() and (p / "__init__.py").exists())}
    assert names - {"__init__", "__main__"} <= set(STAGES)


def test_no_folder_imports_a_later_stage():
    rank = {s: i for i, s in enumerate(STAGES)}
    upward = []
    for path in ROOT.rglob("*.py"):
        src = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if src not in rank:
            continue
        for module in _imports(path):
            dst = _stage(module)
            if dst in rank and rank[dst] > rank[src]:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not upward, "\n".join(upward)
