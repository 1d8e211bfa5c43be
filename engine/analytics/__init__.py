"""Process analytics: dashboard figures over the records and the funnels' stage events (metrics.py),
reporting periods in the business time zone (periods.py)."""

from engine.analytics.metrics import Analytics, Figure, StageCell, stage_condition
from engine.analytics.periods import Period, period_at

__all__ = ["Analytics", "Figure", "Period", "StageCell", "period_at", "stage_condition"]
