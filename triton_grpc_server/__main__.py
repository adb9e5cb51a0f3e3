import sys

from ._build_check import missing_build_message

_problem = missing_build_message()
if _problem:
    print(_problem, file=sys.stderr)
    sys.exit(1)

from .cli import main  # noqa: E402  (only once the generated modules are known to exist)

sys.exit(main())
