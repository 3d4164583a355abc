"""Former home of the pose search; kept so that ``from affinevae.pose_search import ...`` goes on
working. Everything now lives in the :mod:`affinevae.pose` package (search, align, nets, amortise,
record)."""

from .pose import *  # noqa: F401,F403
from .pose import __all__  # noqa: F401
