"""One exception type for bad input: its message is the one sentence the user sees."""


class LayersweepError(Exception):
    """Bad input (missing or corrupt file, bad config value, unknown method or layer).

    The message is a single sentence that names the file, key or value at fault.
    Scripts catch it, print it, remove partial outputs and exit non-zero.
    """
