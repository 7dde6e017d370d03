"""Self-tests of the library. Helpers beside the tests are importable by module name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
