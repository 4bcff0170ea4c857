"""The package's layers, checked: no import cycle and no upward import (issue 28, "One ground").

Floors, bottom up:

1. ``interp`` (the core): imports nothing of ``experiments``;
2. the experiments' ground (``GROUND``: results and prepared texts, the plug-in registry, the
   study's prompts and numbers, shared measurement helpers, cut texts): imports ``interp`` and
   other ground modules only;
3. the experiments, one module each: import ``interp`` and the ground, never another experiment
   (except the explicit ``ALLOWED`` pairs: one experiment's result feeding another) and never
   ``experiments.study``;
4. ``experiments.study`` (the pipeline: reproduce, replicate, extend, report, CLI) and the package
   facade (``experiments/__init__.py``, ``__main__``) on top.

Every import counts, at module level or inside a function (a lazy import is a dependency too).
Prints the measurement (modules, edges, floors: the longest import chain, cycles, which
experiment imports which) and one line per violation; exits 1 on any.

    python tools/check_layers.py            # this checkout
    python tools/check_layers.py --root DIR # another tree (e.g. an older commit, for comparison)
"""

import argparse
import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGES = ("interp", "experiments")
STUDY = "experiments.study"
FACADE = {
    "experiments",
    "experiments.__main__",
    "experiments.runs",
}  # the public face, above every experiment
# (``runs``: ``load_run`` reads every experiment's results back)
GROUND = {  # the bottom of experiments/: what the experiments stand on
    "experiments.base",
    "experiments.registry",
    "experiments.prompts",
    "experiments.measure",
    "experiments.texts",
    "experiments.facts",
}
# (experiment, experiment it imports): one experiment's result feeding another's, kept on purpose.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "experiments.clipped_generation",
        "experiments.minimal_subspace",
    ): "generation clips to the minimal k of the SVD order (run_minimal_subspace when not given)",
    (
        "experiments.orderings",
        "experiments.single_direction",
    ): "run_orderings orders by single-direction importance (run_single_direction when not given)",
    (
        "experiments.exact_importance",
        "experiments.single_direction",
    ): "exact importance reuses an exhaustive single-direction result, else runs one",
    (
        "experiments.hessian_ranking",
        "experiments.single_direction",
    ): "the Hessian ranking is scored against exact importances (exhaustive_single_direction)",
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, source: str, is_package: bool = False) -> set[tuple[str, ...]]:
    """What ``source`` imports, at any depth of the syntax tree: ``(name,)`` for ``import name``,
    ``(a, a.b)`` for ``from a import b`` (the module ``a.b`` if there is one, else ``a``)."""
    out: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {(alias.name,) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            out |= {(target, f"{target}.{alias.name}") for alias in node.names}
    return out


def package_imports(
    root: Path, packages: Iterable[str] = PACKAGES
) -> dict[str, set[tuple[str, ...]]]:
    """Every module of ``packages`` under ``root`` and what it imports (``imports_of``): the one
    parse of the tree that the graph and the unresolved imports are both read from."""
    files = {
        module_name(root, path): path
        for pkg in packages
        for path in sorted((root / pkg).rglob("*.py"))
    }
    return {
        name: imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for name, path in files.items()
    }


def module_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """module -> the package modules it imports (``interp``, ``experiments`` and below)."""
    return graph_of(package_imports(root, packages))


def graph_of(imports: Mapping[str, set[tuple[str, ...]]]) -> dict[str, set[str]]:
    """``package_imports``' answer as module -> the package modules it imports."""
    graph: dict[str, set[str]] = {}
    for name, found in imports.items():
        deps = set()
        for names in found:
            target = names[-1] if names[-1] in imports else names[0]
            # "import a.b.c" imports a, a.b, a.b.c: the deepest package module named is the one
            while target and target not in imports:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def unresolved(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    """One line per ``from X import ...`` / ``import X`` (lazy ones too) whose module ``X`` is in a
    checked package but is no file of it: a module moved without updating an importer (such an
    import fails only when its function runs, e.g. on a Ray worker)."""
    return unresolved_in(package_imports(root, packages), packages)


def unresolved_in(
    imports: Mapping[str, set[tuple[str, ...]]], packages: Iterable[str] = PACKAGES
) -> list[str]:
    """``unresolved`` of ``package_imports``' answer."""
    tops = set(packages)
    return sorted(
        f"unresolved import: {name} imports {names[0]}, which is not a module of the package"
        for name, found in imports.items()
        for names in found
        if names[0].split(".")[0] in tops and names[0] not in imports
    )


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan, iterative enough for a package (recursion depth = floors)
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def floors(graph: Mapping[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 0 for a module importing no package module, else 1 + the highest floor
    it imports (the modules of a cycle share one floor, counted once)."""
    comp_of = {m: tuple(c) for c in cycles(graph) for m in c}
    memo: dict[str, int] = {}

    def floor(v: str) -> int:
        if v not in memo:
            memo[v] = 0  # guards the recursion inside a cycle
            group = comp_of.get(v, (v,))
            deps = {w for u in group for w in graph.get(u, ()) if w not in group}
            f = 1 + max((floor(w) for w in deps), default=-1)
            for u in group:
                memo[u] = f
        return memo[v]

    return {v: floor(v) for v in graph}


def restrict(graph: Mapping[str, set[str]], keep: Iterable[str]) -> dict[str, set[str]]:
    keep = set(keep)
    return {m: {d for d in deps if d in keep} for m, deps in graph.items() if m in keep}


def longest_chain(graph: Mapping[str, set[str]]) -> list[str]:
    """One longest import chain (top module first; a cycle's modules are one floor, ``a <-> b``)."""
    f = floors(graph)
    if not f:
        return []
    comp_of = {m: tuple(c) for c in cycles(graph) for m in c}
    v = max(sorted(f), key=lambda m: f[m])
    chain = []
    while True:
        group = comp_of.get(v, (v,))
        chain.append(" <-> ".join(group))
        if f[v] == 0:
            return chain
        below = sorted({w for u in group for w in graph.get(u, ())} - set(group))
        v = next(w for w in below if f.get(w, 0) == f[v] - 1)


def layer(module: str, ground: set[str] = GROUND) -> str:
    if module == "interp" or module.startswith("interp."):
        return "interp"
    if module in FACADE:
        return "facade"
    if module == STUDY or module.startswith(STUDY + "."):
        return "study"
    if module in ground:
        return "ground"
    return "experiment"


def violations(
    graph: Mapping[str, set[str]],
    *,
    ground: set[str] = GROUND,
    allowed: Mapping[tuple[str, str], str] = ALLOWED,
) -> list[str]:
    """One line per cycle and per upward import."""
    out = [f"cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for src in sorted(graph):
        a = layer(src, ground)
        for dst in sorted(graph[src]):
            b = layer(dst, ground)
            why = None
            if a == "interp" and b != "interp":
                why = "interp imports experiments"
            elif a in ("ground", "experiment") and b in ("study", "facade"):
                what = "the pipeline" if b == "study" else "the package facade"
                why = f"{a} module imports {what}"
            elif a == "ground" and b == "experiment":
                why = "ground module imports an experiment module"
            elif a == "experiment" and b == "experiment" and (src, dst) not in allowed:
                why = "experiment module imports another experiment module (not in ALLOWED)"
            if why:
                out.append(f"upward import: {src} -> {dst} ({why})")
    return out


def experiment_edges(
    graph: Mapping[str, set[str]], ground: set[str] = GROUND
) -> list[tuple[str, str]]:
    return [
        (s, d)
        for s in sorted(graph)
        for d in sorted(graph[s])
        if layer(s, ground) == "experiment" and layer(d, ground) == "experiment"
    ]


def report(
    graph: Mapping[str, set[str]],
    *,
    ground: set[str] = GROUND,
    allowed: Mapping[tuple[str, str], str] = ALLOWED,
) -> tuple[list[str], list[str]]:
    """(the measurement's lines, the violations)."""

    def measured(title: str, sub: Mapping[str, set[str]]) -> str:
        chain = longest_chain(sub)
        return f"{title}: {len(chain)} ({' -> '.join(chain)})"

    def only(*layers: str) -> dict[str, set[str]]:
        return restrict(graph, (m for m in graph if layer(m, ground) in layers))

    cyc = cycles(graph)
    lines = [
        f"modules: {len(graph)}, imports between them: {sum(len(d) for d in graph.values())}",
        measured("floors (the longest import chain)", graph),
        measured("floors above interp", only("study", "facade", "ground", "experiment")),
        measured(
            "floors of experiments/ without the pipeline (ground and experiment modules)",
            only("ground", "experiment"),
        ),
        measured("floors of the pipeline (experiments.study)", only("study")),
        f"cycles: {len(cyc)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cyc),
    ]
    edges = experiment_edges(graph, ground)
    lines.append(f"experiment modules importing another experiment module: {len(edges)}")
    lines += [
        f"  {s} -> {d}" + (f"  (allowed: {allowed[(s, d)]})" if (s, d) in allowed else "")
        for s, d in edges
    ]
    return lines, violations(graph, ground=ground, allowed=allowed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the tree holding interp/ and experiments/ (default: this checkout)",
    )
    args = ap.parse_args(argv)
    imports = package_imports(args.root)
    lines, bad = report(graph_of(imports))
    bad = bad + unresolved_in(imports)
    print("\n".join(lines))
    for line in bad:
        print(line)
    print(f"{'FAIL' if bad else 'ok'}: {len(bad)} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
