"""zasync: durable background jobs for ZODB applications."""
# ``zasync.local.getJob()`` and friends work after a plain ``import
# zasync``, as ``zc.async.local`` did.
from zasync import local  # noqa: F401
