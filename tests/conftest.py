"""Shared fixtures live in tests/fixtures/, one module per real part they start."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.mqtt",
    "tests.fixtures.micropython",
    "tests.fixtures.esp32",
    "tests.fixtures.qemu",
    "tests.fixtures.gateway",
]
