"""Write js/families.js, the preview's depth table, from the family modules: `python tests/generate_families_js.py`.

tests/test_family_registry.py fails while the checked-in file differs from what this writes.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import conftest  # noqa: E402,F401  (loads the pack as `tokenfocus`)
from tokenfocus.families import preview_module  # noqa: E402

TARGET = HERE.parent / "js" / "families.js"

if __name__ == "__main__":
    TARGET.write_text(preview_module(), encoding="utf-8")
    print(f"wrote {TARGET}")
