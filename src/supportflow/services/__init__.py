"""Services built on a :class:`~supportflow.Desk`: feedback and reports.

They sit above the desk (DESIGN.md layers) and run their changes through ``desk.execute``,
so each is one unit of work with the ticket it concerns.

>>> feedback = FeedbackExtension(FeedbackPolicy(secret=b"0123456789abcdef"))  # doctest: +SKIP
>>> desk = Desk(extensions=feedback.extensions)                              # doctest: +SKIP
>>> service = FeedbackService(desk, feedback)                                # doctest: +SKIP
>>> print(monthly_report(desk, 2026, 3, "Asia/Shanghai").to_markdown())      # doctest: +SKIP
"""

from __future__ import annotations

from supportflow.services.feedback import FeedbackService
from supportflow.services.reports import Report, daily_report, monthly_report, weekly_report

__all__ = ["FeedbackService", "Report", "daily_report", "monthly_report", "weekly_report"]
