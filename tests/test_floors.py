"""The package's floors, read from the source: no import runs back up a floor.

Ground floor (``registry``, ``options``, ``decoding``, ``canvas``, ``testing``):
no vLLM, nothing above it.  Role floors (``models``, ``core``, ``worker``,
``serving``): the ground floor, never each other.  ``patch`` is a home, not
a floor: each module imports vLLM and, at most, the floor it wires into vLLM;
a floor may import the patch module that serves it.  ``startup`` wires
everything; the package root calls ``startup``.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vllm_dllm_plugin"
GROUND = {"registry", "options", "decoding", "canvas"}
ROLES = {"models", "core", "worker", "serving"}

# part -> the parts it may import besides itself
ALLOWED = {
    **{part: set(GROUND) for part in GROUND},
    "testing": {"testing"},                      # independent of the engine
    "models": GROUND | {"patch.non_causal_attention", "patch.bailing_moe_router_logits"},
    "core": GROUND | {"patch.scheduler_stats", "patch.kv_cache_publishing",
                      "patch.structured_output_manager"},
    "worker": set(GROUND),
    "serving": GROUND | {"patch.scheduler_stats"},
    "patch": GROUND | {"serving"},
    "startup": GROUND | ROLES | {"patch"},
    "__init__": {"startup"},
}
# patch modules that wire nothing of ours: vLLM only
LEAF_PATCHES = {"scheduler_stats", "scheduler_warning", "non_causal_attention", "_wrapping",
                "kv_cache_publishing", "structured_output_manager"}


def part_of(module: str) -> str:
    """'vllm_dllm_plugin.core.scheduler' -> 'core'; root modules by name."""
    parts = module.split(".")[1:]
    return parts[0] if parts else "__init__"


def internal_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    here = ["vllm_dllm_plugin", *path.relative_to(PACKAGE).with_suffix("").parts]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] == "vllm_dllm_plugin"}


def allowed(source_part: str, source_module: str, target: str) -> bool:
    target_parts = target.split(".")[1:]
    if not target_parts:
        return False                                 # the package root is the top
    target_part = target_parts[0]
    if target_part == source_part:
        return True
    grants = ALLOWED[source_part]
    if target_part in grants:
        return True
    sub = ".".join(target_parts[:2])
    return sub in grants


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_floor(path):
    module = ".".join(["vllm_dllm_plugin", *path.relative_to(PACKAGE).with_suffix("").parts])
    module = module.removesuffix(".__init__")
    part = part_of(module) if module != "vllm_dllm_plugin" else "__init__"
    bad = sorted(t for t in internal_imports(path)
                 if not allowed(part, module, t) and not module.startswith(t + "."))
    if part == "patch" and module.rsplit(".", 1)[-1] in LEAF_PATCHES:
        bad += sorted(t for t in internal_imports(path) if part_of(t) != "patch")
    assert not bad, f"{module} imports {bad}"


def test_ground_floor_imports_no_vllm():
    for path in MODULES:
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if part not in GROUND | {"testing"}:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and
                     not node.level else [])
            assert not any(n.split(".")[0] == "vllm" for n in names), (path, names)


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: a worker module importing the scheduler is caught."""
    assert not allowed("worker", "vllm_dllm_plugin.worker.runner",
                       "vllm_dllm_plugin.core.scheduler")
    assert not allowed("serving", "vllm_dllm_plugin.serving.metrics", "vllm_dllm_plugin")
    assert not allowed("models", "vllm_dllm_plugin.models.llada",
                       "vllm_dllm_plugin.startup.deployment")
    assert allowed("startup", "vllm_dllm_plugin.startup.plugin", "vllm_dllm_plugin.registry")
