"""The heavy side: operations that need a live Keras model. Imported lazily, only when asked for.

Importing this package is the gate: without the [tensorflow] extra it raises MissingExtra (one
line naming the extra, exit 2) before any module here tries to import Keras. It also keeps
TensorFlow's start-up noise off stderr (quiet.py) unless --debug.
"""

from sparseprune.extras import require
from sparseprune.keras_ops import quiet

require("tensorflow")
quiet.install()
