"""Build hook of the ``net-core`` distribution: the optional C accelerator.

Everything else about the distribution lives in ``pyproject.toml``. The extension
(``net_core._pcstruct_c``, postcard record packing) is optional: when it cannot be
compiled (no compiler, no Python headers) the install still succeeds and
``net_core.cortex._pcstruct`` uses its pure-Python twin.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "net_core._pcstruct_c",
            ["net_core/_pcstruct_c.c"],
            optional=True,
        )
    ]
)
