"""Stand-in: workerd counts and allows "bad" entropy calls while it builds a memory
snapshot. The local host takes no snapshot, so every call is allowed."""

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def allow_bad_entropy_calls(count: int) -> Iterator[None]:
    yield
