"""gradc's modules import one another without a cycle.

A cycle among module-level imports makes import order matter (a module sees a half-initialised
neighbour) and ties every module to the package `__init__`, which imports everything. The test
walks the module-level `import` statements of every module under gradc/ with `ast` (imports inside
functions are deliberate late bindings and do not count) and asserts the graph is acyclic.
"""
import ast
import os

import gradc

PACKAGE_DIR = os.path.dirname(os.path.abspath(gradc.__file__))


def module_files():
    """{dotted module name: path} for every .py file of the gradc package."""
    modules = {}
    root = os.path.dirname(PACKAGE_DIR)
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                modules[dotted.removesuffix(".__init__")] = path
    return modules


def top_level_statements(body):
    """The statements that run at import time, looking inside module-level `if` and `try`."""
    for node in body:
        if isinstance(node, (ast.If, ast.Try)):
            yield from top_level_statements(node.body)
            for handler in getattr(node, "handlers", ()):
                yield from top_level_statements(handler.body)
            yield from top_level_statements(node.orelse)
        else:
            yield node


def imported_modules(name, path, modules):
    """The gradc modules that module `name` imports at module level. `from P import x` names the
    submodule P.x when x is one, else P itself (its `__init__`)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in top_level_statements(ast.parse(open(path).read()).body):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(parts + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules}


def find_cycle(graph):
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state = {}  # node -> "open" while on the DFS path, "done" after

    def visit(node, path):  # path ends with node
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def import_graph():
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def test_the_walk_sees_imports_and_cycles():
    graph = import_graph()
    assert "gradc.ir" in graph["gradc.ops.fn"]            # from ..ir import ...
    assert "gradc.ops.fn" in graph["gradc.ops.reduction"]  # from . import fn
    assert "gradc._version" in graph["gradc"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) in (["a", "b", "c", "a"],)
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_level_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
