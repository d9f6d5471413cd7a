"""The one exception a user sees for a bad spec."""
from mvcompile.errors import MvcompileError


class SpecError(MvcompileError, ValueError):
    """A spec file is unreadable or invalid; the message names the file, key path and problem."""
