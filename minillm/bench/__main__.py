"""`python -m minillm.bench [--out FILE.md] [--quick] [--only SECTION ...]`: see `minillm.bench`."""

import sys

from minillm.bench import main

sys.exit(main())
