"""The single error type of the data package."""


class DataError(ValueError):
    """The user's data cannot be used as configured.

    Messages are one line that names the file, the column or row, and what was expected, so a CLI can print
    them verbatim and a user can fix the file without reading a traceback.
    """
