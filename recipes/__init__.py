"""Command-line recipes (`python -m recipes.<name> --help`): flags -> a `Config` -> library calls.

Importing this package turns TensorFlow's oneDNN CPU kernels on where TensorFlow leaves them
off, unless `TF_ENABLE_ONEDNN_OPTS` is set (`okdph_keras.onednn`).
"""

from okdph_keras import onednn

onednn.prefer_onednn()
