"""Shared fixtures live in tests/fixtures/, one module per real part they start."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.mqtt",
    "tests.fixtures.micropython",
    "tests.fixtures.esp32",
    "tests.fixtures.qemu",
    "tests.fixtures.gateway",
]


def pytest_collection_modifyitems(items: list) -> None:  # type: ignore[type-arg]
    """The long end-to-end tests (marked slow) first, in their order: the parallel workers then
    finish together instead of one waiting on a long test it picked up last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
