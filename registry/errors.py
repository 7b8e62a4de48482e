"""Exceptions of the registry API. Each message names the lot (or device) and what was wrong."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class: a request the registry refuses. Nothing was changed."""


class LotNotFound(RegistryError):
    def __init__(self, lot_id: str) -> None:
        super().__init__(f"lot {lot_id} not found")
        self.lot_id = lot_id


class ProductNotFound(RegistryError):
    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} not found")
        self.product_id = product_id


class IllegalTransition(RegistryError):
    """The lifecycle does not allow `step` from the lot's current state."""

    def __init__(self, lot_id: str, state: str, step: str, allowed_from: tuple[str, ...] = ()) -> None:
        hint = f" (allowed from: {', '.join(allowed_from)})" if allowed_from else ""
        super().__init__(f"lot {lot_id} is '{state}': cannot {step}{hint}")
        self.lot_id, self.state, self.step = lot_id, state, step


class AssignmentConflict(RegistryError):
    """A device would inspect two lots at the same time."""


class InvalidInput(RegistryError):
    """A value the database would refuse, caught early with a precise message."""
