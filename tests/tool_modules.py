"""The command-line tools under ``tools/`` loaded as modules, for the tests that call
their functions (they are scripts, not part of the installed package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    """Execute ``tools/<name>.py`` as the module ``deblurd_tools_<name>`` (registered in
    ``sys.modules`` first, so its dataclasses and pickling resolve) and return it."""
    spec = importlib.util.spec_from_file_location(f"deblurd_tools_{name}", TOOLS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load tools/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
