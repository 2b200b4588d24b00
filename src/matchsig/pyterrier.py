"""``matchsig.pyterrier``: the documented path of the PyTerrier integration, :mod:`matchsig.integrations.pyterrier`."""

from .integrations.pyterrier import *  # noqa: F401,F403
from .integrations.pyterrier import __all__  # noqa: F401
