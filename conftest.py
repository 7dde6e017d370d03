"""Repository root conftest: the miqa plugin is registered through its ``pytest11`` entry point
(``pip install -e .``). Nothing else is needed here; it marks the rootdir for pytest."""
