"""Exception types shared by every layer."""


class MiqaUsageError(Exception):
    """A bad option, config value, model spec or data source: stop before any model loads."""


class JudgeError(Exception):
    """A judge could not be loaded or could not score (message names the model and the fix)."""
