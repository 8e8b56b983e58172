"""Package structure: no import cycles between yolox_jax modules (imports inside functions
count too), every name in ``yolox_jax.__all__`` exists, and each public name of docs/api.md
has one import path."""
import ast
import importlib
from pathlib import Path

import pytest

import yolox_jax

ROOT = Path(yolox_jax.__file__).parent
API_PATHS = {
    "yolox_jax": ["build_model", "MODEL_NAMES", "anchor_grid", "decode", "postprocess",
                  "Detections"],
    "yolox_jax.convert": ["from_torch_state_dict", "load_torch_checkpoint", "to_torch_state_dict"],
    "yolox_jax.export": ["export_model", "export_onnx"],
    "yolox_jax.exported": ["load_exported", "save_exported", "run_exported"],
    "yolox_jax.errors": ["UserError"],
    "yolox_jax.assign": ["simota", "simota_batch", "ota", "Assignment"],
    "yolox_jax.losses": ["yolox_loss"],
    "yolox_jax.nms": ["nms", "nms_batched"],
    "yolox_jax.cpu": ["tune_process", "tuned"],
}


def _module_names():
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imports(path, modules, package):
    """yolox_jax modules that ``path`` imports anywhere in its body."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules}
    return out


def _cycles(graph):
    """Every strongly connected component with more than one module, or a self-import."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = _imports(path, modules, package) - {name}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_all_lists_only_names_that_exist():
    for name in yolox_jax.__all__:
        assert getattr(yolox_jax, name) is not None, name


@pytest.mark.parametrize("module", sorted(API_PATHS))
def test_public_names_resolve_at_their_documented_path(module):
    mod = importlib.import_module(module)
    for name in API_PATHS[module]:
        assert callable(getattr(mod, name)) or getattr(mod, name), (module, name)


def test_public_modules_are_not_reexports_of_each_other():
    """One import path per public name: no top-level module re-exports an ``ops`` module."""
    for name in ("losses", "nms"):
        mod = importlib.import_module(f"yolox_jax.{name}")
        assert Path(mod.__file__).parent == ROOT, mod.__file__
    assert not (ROOT / "assign.py").exists()
    for stale in ("simota", "ota", "losses", "nms", "conv"):
        assert not (ROOT / "ops" / f"{stale}.py").exists(), stale


def test_api_doc_lists_the_public_paths():
    doc = (ROOT.parent / "docs" / "api.md").read_text()
    for module, names in API_PATHS.items():
        assert f"`{module}`" in doc, module
        for name in names:
            assert f"`{name}`" in doc, (module, name)
