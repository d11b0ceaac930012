"""capslib's import graph has no circle (issue 25).

Every ``import`` counts, at any depth: one inside a function runs as surely as
one at the top, only later, and a circle of late imports still ties the modules
into one piece that cannot be read, tested or changed alone. The one exception
is a module-level ``__getattr__`` (PEP 562) that forwards an old name to where
it now lives; each such forwarding is listed in ``FORWARDED`` with its reason.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_free

PACKAGE = Path(__file__).resolve().parents[1] / "capslib"

# (module, module it forwards names to): old import paths kept working.
FORWARDED = {
    # capslib.model.load_capsnet / load_classifier: the notebooks' path to the loaders,
    # which moved above the models (capslib.loading imports capslib.model).
    ("capslib.model", "capslib.loading"),
}


def module_files(package=PACKAGE):
    """{dotted name: path} for every module of the package, subpackages included."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name, modules):
    """The most specific module of ``modules`` that ``name`` (dotted) is or lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module, source, modules, is_package=False):
    """(edges, forwarded): the package's modules that ``source`` imports anywhere, and
    those imported only inside a module-level ``__getattr__`` (forwarded names)."""
    tree = ast.parse(source)
    forwarders = [node for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    in_forwarder = {id(n) for f in forwarders for n in ast.walk(f)}
    edges, forwarded = set(), set()
    here = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, or levels above it
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}" if base else anchor
            # `from capslib import data`: the submodule; `from capslib.data import X`: data
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found = {_resolve(t, modules) for t in targets} - {None, module}
        (forwarded if id(node) in in_forwarder else edges).update(found)
    return edges, forwarded


def import_graph(package=PACKAGE):
    """{module: set of modules it imports}, forwardings listed in FORWARDED left out."""
    modules = module_files(package)
    graph = {}
    for name, path in modules.items():
        edges, forwarded = imports_of(name, path.read_text(), modules,
                                      is_package=path.name == "__init__.py")
        graph[name] = edges | {f for f in forwarded if (name, f) not in FORWARDED}
    return graph


def cycles(graph):
    """One circle (as a list of modules, first == last) for each strongly connected
    group of modules (Tarjan), in a stable order."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_in(group, graph) for group in groups]


def _circle_in(group, graph):
    """A shortest circle through the group's first module, by breadth-first search."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no circle in {group}")  # a strongly connected group has one


def test_capslib_has_no_import_circle():
    found = cycles(import_graph())
    assert not found, "import circles in capslib:\n" + "\n".join(
        " -> ".join(circle) for circle in found)


def test_the_model_imports_neither_the_baseline_nor_shipping():
    model = import_graph()["capslib.model"]
    assert not model & {"capslib.baseline", "capslib.pretrained", "capslib.shipped",
                        "capslib.loading", "capslib.train"}


def test_loading_sits_above_the_models():
    graph = import_graph()
    assert {"capslib.model", "capslib.baseline", "capslib.shipped"} <= graph["capslib.loading"]
    assert "capslib.loading" in graph["capslib.train"]


# -- The walk itself: it sees what it must -----------------------------------------


def test_a_circle_through_a_late_import_is_found_and_named():
    modules = {"p": None, "p.a": None, "p.b": None, "p.c": None}
    a, _ = imports_of("p.a", "def f():\n    from p.b import x\n", modules)
    b, _ = imports_of("p.b", "import p.c\n", modules)
    c, _ = imports_of("p.c", "class K:\n    def m(self):\n        from . import a\n", modules)
    assert (a, b, c) == ({"p.b"}, {"p.c"}, {"p.a"})
    assert cycles({"p.a": a, "p.b": b, "p.c": c}) == [["p.a", "p.b", "p.c", "p.a"]]
    assert cycles({"p.a": a, "p.b": b, "p.c": set()}) == []


def test_a_forwarding_getattr_is_told_apart():
    modules = {"p": None, "p.a": None, "p.b": None}
    source = ("def __getattr__(name):\n    from p import b\n    return getattr(b, name)\n"
              "def g():\n    import p.b.inner\n")
    edges, forwarded = imports_of("p.a", source, modules)
    assert forwarded == {"p.b"} and edges == {"p.b"}  # g's import still counts
    edges, forwarded = imports_of("p.a", source.split("def g")[0], modules)
    assert forwarded == {"p.b"} and edges == set()


def test_the_old_import_paths_still_work():
    from capslib import loading, model, pretrained, shipped
    assert model.load_capsnet is loading.load_capsnet
    assert model.load_classifier is loading.load_classifier
    assert "load_capsnet" in dir(model)
    assert pretrained.load_pretrained is shipped.load_pretrained
    assert pretrained.PretrainedError is shipped.PretrainedError
    with pytest.raises(AttributeError):
        model.no_such_name


# -- import capslib is light: Keras comes with the first name that needs it ----------


def test_import_capslib_and_the_teachers_hooks_load_no_framework():
    pytest.importorskip("nbgrader")  # capslib.classroom.hooks: every nbgrader command loads it
    code = ("import sys, capslib, capslib.classroom.hooks\n"
            "print([m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules])\n"
            "from capslib import CLASS_NAMES, CapsNet, checks, viz\n"
            "print(CapsNet.__name__, checks.check_squash.__name__, 'CapsNet' in dir(capslib))\n")
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert job.returncode == 0, job.stderr[-2000:]
    assert job.stdout.splitlines() == ["[]", "CapsNet check_squash True"]
