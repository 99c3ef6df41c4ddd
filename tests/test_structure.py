"""The shape of the shipped code (``packing``, ``pruning_data``, ``pipelines``, ``training``): no
import circles, the algorithm packages below the application, small modules.

The imports are read with ``ast``, everywhere in a module (inside functions too: a lazy import
is an arrow all the same), relative ones resolved, and ``from pkg import name`` taken as the
submodule ``pkg.name`` when there is one. A package ``__init__`` that loads names on first use
(PEP 562: ``__getattr__`` plus a module-level dict of name -> module) is read through: ``from
pipelines.infra.storage import open_input`` is an arrow to ``pipelines/infra/storage/reading.py``. Any other
``importlib.import_module`` / ``__import__`` is an arrow no reader sees, and fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("packing", "pruning_data", "pipelines", "training")
PURE = ("packing", "pruning_data")  # the algorithms: nothing of the application, no framework
FORBIDDEN = ("pipelines", "training", "ray", "apache_beam", "beam", "pyarrow", "datasets",
             "fsspec")
MAX_LINES = 300


def modules(root: Path, packages) -> dict[str, Path]:
    """Dotted name -> file of every module of ``packages`` under ``root``: its Python source, or
    the C source of a compiled one (a leaf: it imports nothing of ours). A folder without an
    ``__init__.py`` is no package, and is not shipped."""
    found = {}
    for package in packages:
        for path in sorted(p for ext in ("*.py", "*.c") for p in (root / package).rglob(ext)):
            rel = path.relative_to(root)
            if not all((root / Path(*rel.parts[:i]) / "__init__.py").is_file()
                       for i in range(1, len(rel.parts))):
                continue
            parts = rel.with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _facade(tree: ast.Module, package: str, known) -> dict[str, str]:
    """A PEP 562 package's name -> module map (its module-level dicts of module names)."""
    if not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        return {}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            try:
                table = eval(compile(ast.Expression(node.value), "<facade>", "eval"),  # noqa: S307
                             {"__builtins__": {}, "dict": dict})
            except Exception:  # noqa: BLE001 - not a table of names
                continue
            for name, where in table.items():
                for target in (f"{package}.{where}", str(where)):
                    if target in known:
                        out[name] = target
                        break
    return out


def _dynamic(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))


def read_imports(root: Path, packages):
    """(edges, raw, hidden): ``edges[module]`` = [(imported shipped module, line)];
    ``raw[module]`` = [(every absolute name it imports, line)]; ``hidden`` = ["file:line", ...]
    for dynamic imports that name no module literally, outside a PEP 562 package."""
    known = modules(root, packages)
    trees = {m: ast.parse(p.read_text(encoding="utf-8"), str(p)) for m, p in known.items()
             if p.suffix == ".py"}
    facades = {m: _facade(t, m, known) for m, t in trees.items() if known[m].name == "__init__.py"}

    def shipped(name: str, attr: str | None = None) -> str | None:
        if attr is not None:
            if f"{name}.{attr}" in known:
                return f"{name}.{attr}"
            if attr in facades.get(name, {}):
                return facades[name][attr]
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    edges, raw, hidden = {}, {}, []
    for mod, tree in trees.items():
        is_pkg = known[mod].name == "__init__.py"
        out, names = edges.setdefault(mod, []), raw.setdefault(mod, [])
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, ast.Import):
                pairs = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = ".".join(p for p in (pkg, node.module) if p)
                pairs = [(base, a.name if a.name != "*" else None) for a in node.names]
            elif isinstance(node, ast.Call) and _dynamic(node):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    pairs = [(arg.value, None)]
                elif mod not in facades or not facades[mod]:
                    hidden.append(f"{known[mod].relative_to(root)}:{node.lineno}")
            for name, attr in pairs:
                names.append((name, node.lineno))
                target = shipped(name, attr)
                if target is not None and target != mod:
                    out.append((target, node.lineno))
    return edges, raw, hidden, known


def circles(edges: dict) -> list[list[str]]:
    """One shortest circle [a, b, ..., a] through the first module of each knot."""
    return sorted(_shortest_circle(min(g), g, edges) for g in knots(edges))


def knots(edges: dict) -> list[set]:
    """Every strongly connected set of more than one module (Tarjan): modules that each reach
    all the others through imports."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _shortest_circle(start: str, group: set, edges: dict) -> list[str]:
    """[start, ..., start]: a shortest circle through ``start`` inside ``group`` (BFS)."""
    back, queue = {start: None}, [start]
    for v in queue:
        for w, _ in sorted(edges[v]):
            if w == start:
                path = [v]
                while back[path[-1]] is not None:
                    path.append(back[path[-1]])
                return [*reversed(path), start]
            if w in group and w not in back:
                back[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in no circle")  # a strongly connected group has one


def describe(circle: list[str], edges: dict, known: dict, root: Path) -> str:
    """``a.py:12 -> b.py:40 -> a.py``: each file with the line of its import of the next."""
    steps = []
    for a, b in zip(circle, circle[1:]):
        line = min(n for t, n in edges[a] if t == b)
        steps.append(f"{known[a].relative_to(root)}:{line}")
    return " -> ".join(steps + [str(known[circle[-1]].relative_to(root))])


class Imports(tuple):
    """(edges, raw, hidden, known) of ``read_imports``; shown short in a failure's traceback."""

    def __repr__(self) -> str:
        return f"<imports of {len(self[3])} modules>"


@pytest.fixture(scope="module")
def shipped():
    return Imports(read_imports(ROOT, SHIPPED))


def test_no_import_circles(shipped):
    edges, _, _, known = shipped
    found = []
    for knot in sorted(knots(edges), key=min):
        found.append(describe(_shortest_circle(min(knot), knot, edges), edges, known, ROOT))
        if len(knot) > len(found[-1].split(" -> ")) - 1:
            found[-1] += (f"\n    (one circle of a knot of {len(knot)} files: "
                          + ", ".join(str(known[m].relative_to(ROOT)) for m in sorted(knot)) + ")")
    assert not found, "import circles (file:line of the import -> ...):\n" + "\n".join(found)


def test_the_walk_finds_every_kind_of_arrow(tmp_path):
    """Circles closed by a function-level import, a relative one, ``from pkg import submodule``
    and a PEP 562 package's name are each found; a one-way tree has none; a computed
    ``import_module`` is reported, a literal one is an arrow."""
    files = {
        "top/__init__.py": "",
        "top/a.py": "def f():\n    from top.b import g\n",  # a -> b, inside a function
        "top/b.py": "from . import a\n",  # b -> a, relative, a submodule by name
        "top/lazy/__init__.py": ("_WHERE = {**dict.fromkeys(['x'], 'inner')}\n"
                                 "def __getattr__(name):\n    import importlib\n"
                                 "    return importlib.import_module(_WHERE[name])\n"),
        "top/lazy/inner.py": "from .. import c\n",  # inner -> c, two levels up
        "top/c.py": "from top.lazy import x\n",  # c -> inner, through the facade
        "top/d.py": "import importlib\nimportlib.import_module('top.e')\n"
                    "importlib.import_module('top.' + 'e')\n",
        "top/e.py": "import os\n",
        "below/__init__.py": "from top import e\nfrom below.f import h\n",
        "below/f.py": "import numpy\nimport top.lazy.inner as i\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges, raw, hidden, known = read_imports(tmp_path, ("top", "below"))
    assert circles(edges) == [["top.a", "top.b", "top.a"],
                              ["top.c", "top.lazy.inner", "top.c"]]
    assert describe(["top.a", "top.b", "top.a"], edges, known, tmp_path) == \
        "top/a.py:2 -> top/b.py:1 -> top/a.py"
    assert ("top.e", 2) in edges["top.d"] and hidden == ["top/d.py:3"]
    assert ("numpy", 1) in raw["below.f"] and ("top.lazy.inner", 2) in edges["below.f"]
    assert circles({m: out for m, out in edges.items() if m not in ("top.b", "top.c")}) == []


def test_no_imports_hidden_from_readers(shipped):
    hidden = shipped[2]
    assert not hidden, ("imports by a computed name (an arrow no reader of the imports sees; "
                        "import the module, or use a registry):\n" + "\n".join(hidden))


def test_algorithm_packages_import_nothing_above_them(shipped):
    _, raw, _, known = shipped
    bad = [f"{known[m].relative_to(ROOT)}:{line} imports {name}" for m in sorted(raw)
           if m.split(".")[0] in PURE for name, line in raw[m]
           if name.split(".")[0] in FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_no_module_over_300_lines(shipped):
    known = shipped[3]
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in known.values() if p.suffix == ".py"
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(sorted(long))


def test_training_takes_only_the_shared_infrastructure_from_pipelines(shipped):
    """``training/`` reads shards and configs through ``pipelines.infra`` (errors, storage, atomic
    writes, config loading, plots, the shard format and manifest), never the data pipeline; and
    ``pipelines.infra`` stands on its own: nothing in it imports the rest of ``pipelines``."""
    _, raw, _, known = shipped

    def infra(name: str) -> bool:
        return name == "pipelines.infra" or name.startswith("pipelines.infra.")

    bad = [f"{known[m].relative_to(ROOT)}:{line} imports {name}" for m in sorted(raw)
           if m.split(".")[0] == "training" or infra(m) for name, line in raw[m]
           if name.split(".")[0] == "pipelines" and not infra(name)]
    assert not bad, "\n".join(bad)
