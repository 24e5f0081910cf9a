"""Features that take part in every command of a desk, and the hook they implement.

Pass instances to ``Desk(extensions=[...])``. Write your own by subclassing
:class:`DeskExtension` and overriding the hooks you need.
"""

from __future__ import annotations

from supportflow._change import Change, DeskExtension
from supportflow.extensions.triage import IncidentPolicy, Triage

__all__ = ["Change", "DeskExtension", "IncidentPolicy", "Triage"]
