"""``python -m qilin.cli``: the ``qilin`` command."""

import sys

from qilin.cli import main

sys.exit(main())
