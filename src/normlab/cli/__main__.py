"""`python -m normlab.cli ...` (torchrun starts each process so): the `normlab` command."""
import sys

from normlab.cli import main

sys.exit(main())
