"""Write the documented default config and its JSON schema from the settings models.

    python tools/gen_config.py           # (re)write config/deblurd.toml, config/deblurd.schema.json
    python tools/gen_config.py --check   # exit 1 when the committed files are stale

Run it after adding or changing a settings field; ``tests/unit/test_settings.py`` fails
until the committed files match the models.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from deblurd.settings.docs import render_schema, render_toml

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS: dict[str, Callable[[], str]] = {
    "config/deblurd.toml": render_toml,
    "config/deblurd.schema.json": render_schema,
}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    stale = []
    for relative, render in OUTPUTS.items():
        path = args.root / relative
        text = render()
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        stale.append(relative)
        if not args.check:
            write_atomic(path, text)
            print(f"wrote {relative}")
    if args.check and stale:
        for relative in stale:
            print(f"stale: {relative} (run: python tools/gen_config.py)", file=sys.stderr)
        return 1
    if not stale:
        print("up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
