"""`python -m okdph_keras.predict`: see `okdph_keras.predict.cli`."""

import sys

from okdph_keras.predict.cli import main

sys.exit(main())
