"""The engine's imports run one way, with no cycle and no Ansible (docs/architecture.md, "Layers").

Read from the source (ast), function-level imports included: a lazy import is still a dependency.

    entry points  cli, __main__, install      may import anything in the engine
    lab/          health/                     lab: balancer, backend, bpf, shared helpers;
                                              health (the balancer agent): balancer, bpf, shared
    balancer/     backend/                    their own package, bpf, shared helpers (not each other)
    bgp/                                      bgp (BIRD's configuration), shared helpers
    bpf/                                      bpf, shared helpers
    shared        errors validate document netlink hostnet   shared helpers only
                  daemon

Nothing imports an entry point except another entry point (__main__ runs cli).
"""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_DIR = os.path.join(REPO, "plugins", "module_utils", "engine")

SHARED = {"errors", "validate", "document", "netlink", "hostnet", "daemon"}
ENTRY = {"cli", "__main__", "install"}
ALLOWED = {
    "shared": {"shared"},
    "bpf": {"bpf", "shared"},
    "balancer": {"balancer", "bpf", "shared"},
    "backend": {"backend", "bpf", "shared"},
    "bgp": {"bgp", "shared"},
    "lab": {"lab", "balancer", "backend", "bgp", "bpf", "shared"},
    "health": {"health", "balancer", "bgp", "bpf", "shared"},
    "entry": {"entry", "lab", "health", "balancer", "backend", "bgp", "bpf", "shared"},
}


def modules(root):
    """{dotted name below the engine ('' for the package itself): file path}."""
    found = {}
    for top, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(top, root)
        package = [] if rel == "." else rel.split(os.sep)
        for name in names:
            if name.endswith(".py"):
                parts = package + ([] if name == "__init__.py" else [name[:-3]])
                found[".".join(parts)] = os.path.join(top, name)
    return found


def layer(name):
    first = name.split(".")[0]
    if first in ENTRY:
        return "entry"
    if first in SHARED or first == "":
        return "shared"
    return first


def imports(name, path, known):
    """(engine modules this one imports, absolute modules it imports), lazy imports included."""
    is_package = path.endswith("__init__.py")
    package = name.split(".") if is_package else name.split(".")[:-1]
    package = [p for p in package if p]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            outer.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            outer.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            if node.level - 1 > len(package):
                raise AssertionError("%s: relative import above the engine package" % path)
            base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                candidate = ".".join(base + [alias.name])
                inner.add(candidate if candidate in known else ".".join(base))
    return inner, outer


def graph(root):
    known = modules(root)
    edges, outer = {}, {}
    for name, path in known.items():
        edges[name], outer[name] = imports(name, path, known)
        missing = edges[name] - set(known)
        assert not missing, "%s imports %s, which is no engine file" % (path, sorted(missing))
    return edges, outer


def cycles(edges):
    """Every cycle found by a depth-first walk, each as the list of modules on it."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == node or state.get(nxt) == "done":
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            else:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def upward(edges):
    """(importer, imported) pairs that break the layer rules."""
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            if dst == "" or dst.split(".")[0] == src.split(".")[0] and layer(src) != "shared":
                continue  # the package's own __init__, or a module of its own subpackage
            if layer(dst) not in ALLOWED[layer(src)]:
                bad.append((src, dst))
    return sorted(bad)


def ansible_imports(outer):
    return sorted((name, mod) for name, mods in outer.items() for mod in mods
                  if mod.split(".")[0] in ("ansible", "ansible_collections"))


@pytest.fixture(scope="module")
def engine():
    return graph(ENGINE_DIR)


def test_the_walk_sees_the_layout(engine):
    edges, _outer = engine
    assert {"cli", "errors", "bpf.libbpf", "balancer.vips", "backend.tunnel", "lab.lab"} <= set(edges)
    assert "bpf.libbpf" in edges["balancer.balancer"] and "errors" in edges["bpf.program"]


def test_no_import_cycle(engine):
    assert cycles(engine[0]) == []


def test_imports_run_one_way(engine):
    assert upward(engine[0]) == []


def test_no_ansible_in_the_engine(engine):
    assert ansible_imports(engine[1]) == []


def _tree(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return graph(str(tmp_path))


def test_the_checks_catch_what_they_are_for(tmp_path):
    edges, outer = _tree(tmp_path, {
        "__init__.py": "", "errors.py": "from .bpf import libbpf\n", "cli.py": "from .balancer import vips\n",
        "bpf/__init__.py": "", "bpf/libbpf.py": "def f():\n    from ..balancer import vips\n",
        "balancer/__init__.py": "", "balancer/vips.py": "from ..bpf import libbpf\nfrom ..backend import tunnel\n",
        "backend/__init__.py": "", "backend/tunnel.py": "from . import addresses\nimport ansible.module_utils.basic\n",
        "backend/addresses.py": "from . import tunnel\nfrom .. import errors\n"})
    assert sorted(sorted(set(c)) for c in cycles(edges)) == [["backend.addresses", "backend.tunnel"],
                                                             ["balancer.vips", "bpf.libbpf"]]
    assert upward(edges) == [("balancer.vips", "backend.tunnel"), ("bpf.libbpf", "balancer.vips"),
                             ("errors", "bpf.libbpf")]
    assert ansible_imports(outer) == [("backend.tunnel", "ansible.module_utils.basic")]
