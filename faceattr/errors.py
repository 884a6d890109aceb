"""The one exception family faceattr raises for problems a user can fix."""


class FaceattrError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class ConfigError(FaceattrError):
    """An experiment YAML or a -P override is invalid; the message names the key."""


class DataError(FaceattrError):
    """A data set is invalid; the message lists every bad file or row and why."""
