__version__ = "0.1.0"
# The Triton release whose protocol and behaviour this server follows.
TRITON_COMPAT_VERSION = "2.73.0"
