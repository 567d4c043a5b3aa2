import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# Subprocesses (servers, CLI runs) must import this checkout, installed or not.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
