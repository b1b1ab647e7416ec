"""``python -m app.synthetic OUT.gguf --preset NAME``: write a synthetic model."""

import sys

from app.synthetic.writer import main

sys.exit(main())
