"""Source for a child Python process in which some packages cannot be imported (torch-free checks)."""

from __future__ import annotations

import textwrap


def blocker(*packages: str) -> str:
    """Code that, run first in a process, makes importing any of ``packages`` (or their submodules) an ImportError."""
    return textwrap.dedent(f"""
        import sys
        BLOCKED = {tuple(packages)!r}

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
    """)
