"""The packages import only downwards, and no import (at module level or inside a function)
closes a cycle.

The order, bottom first (docs/architecture.md):

- ``core``: the integer contract, golden model, artifact, codes, ``HwConfig``, boards,
  protocol, command-line basics;
- ``quant`` (training, PyTorch) and ``hw`` (Amaranth), side by side: neither imports the other;
- ``templates`` (generated board tops and HLS C++);
- ``fpga`` (bitstream flow);
- ``sim`` (simulators, models and the explorer, which drive all of the above).

A command (a module with a ``__main__`` block) is at the top of its package: no module of
the project imports one.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RANK = {"core": 0, "quant": 1, "hw": 1, "templates": 2, "fpga": 3, "sim": 4}


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    found = {}
    for package in RANK:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_package(name):
    return MODULES[name].name == "__init__.py"


def _target(name, names):
    """The project modules an import statement loads: ``from a.b import c`` loads ``a.b``,
    and ``a.b.c`` too when ``c`` is a module."""
    out = []
    if name in MODULES:
        out.append(name)
    for n in names:
        if f"{name}.{n}" in MODULES:
            out.append(f"{name}.{n}")
    return out


def imports_of(module):
    """``(line, imported module)`` for every import of a project module in ``module``'s source,
    wherever it stands (module level, inside a function, under ``if``)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in RANK:
                    found += [(node.lineno, t) for t in _target(alias.name, [])]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] in RANK:
                found += [(node.lineno, t) for t in _target(name, [a.name for a in node.names])]
        elif (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module")
              and _is_package(module)):
            # a registry that imports its own modules by name (quant.methods): all of them
            found += [(node.lineno, m) for m in MODULES if m.startswith(module + ".")]
    return found


def is_command(module):
    tree = ast.parse(MODULES[module].read_text())
    return any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


def test_the_packages_are_found():
    assert {m.split(".")[0] for m in MODULES} == set(RANK)
    assert "core.arith" in MODULES and "sim.network" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    top = module.split(".")[0]
    wrong = [f"line {line}: {target}" for line, target in imports_of(module)
             if target.split(".")[0] != top and RANK[target.split(".")[0]] >= RANK[top]]
    assert not wrong, f"{module} (layer {RANK[top]}) imports upwards or sideways: {wrong}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_command_is_imported(module):
    wrong = [f"line {line}: {target}" for line, target in imports_of(module)
             if target != module and is_command(target)]
    assert not wrong, f"{module} imports a command module (move what it needs into a library module): {wrong}"


def test_no_import_cycle():
    """Depth-first search over every import, the ones inside functions included."""
    graph = {m: sorted({t for _, t in imports_of(m) if t != m}) for m in MODULES}
    for m in MODULES:  # importing a.b.c first imports the packages a and a.b
        parent = m.rpartition(".")[0]
        if parent and not _is_package(m):
            graph[m] = sorted(set(graph[m]) - {parent})
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_a_wrong_import_is_caught(tmp_path, monkeypatch):
    """The checks above can fail: an upward import planted in a copy of core/arith.py is found."""
    fake = tmp_path / "arith.py"
    fake.write_text(MODULES["core.arith"].read_text() + "\nfrom hw import plan\n")
    monkeypatch.setitem(MODULES, "core.arith", fake)
    with pytest.raises(AssertionError, match="hw.plan"):
        test_imports_go_down("core.arith")


def test_a_cycle_is_caught(tmp_path, monkeypatch):
    """A cycle closed by an import inside a function (core.arith -> core.artifact -> core.arith) is found."""
    fake = tmp_path / "arith.py"
    fake.write_text(MODULES["core.arith"].read_text() + "\n\ndef _late():\n    from core import artifact\n")
    monkeypatch.setitem(MODULES, "core.arith", fake)
    with pytest.raises(pytest.fail.Exception, match="import cycle: .*core.arith"):
        test_no_import_cycle()
