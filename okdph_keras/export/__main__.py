"""`python -m okdph_keras.export`: see `okdph_keras.export.cli`."""

import sys

from okdph_keras.export.cli import main

sys.exit(main())
