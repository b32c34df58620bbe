"""`python -m okdph_keras.analysis`: see `okdph_keras.analysis.cli`."""

import sys

from okdph_keras.analysis.cli import main

sys.exit(main())
