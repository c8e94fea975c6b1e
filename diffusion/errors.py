"""Errors that mean "bad input": the CLI prints their message as one paragraph and exits 2."""


class InputError(ValueError):
    """Base of every bad-input error (missing file, bad schema, bad config, failed validation).

    Messages must never contain patient rows or ids: column names, counts and rates only.
    """
