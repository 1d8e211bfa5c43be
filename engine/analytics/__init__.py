"""Process analytics: dashboard figures over the records and the funnels' stage events (metrics.py),
reporting periods in the business time zone (periods.py), the `within=` filter rates count with (rates.py),
records stuck in a stage above its norm (stuck.py)."""

from engine.analytics.metrics import Analytics, Figure, StageCell, stage_condition
from engine.analytics.periods import Period, period_at, point_name, split_period
from engine.analytics.rates import within_condition
from engine.analytics.stuck import StuckRecord, stuck_condition

__all__ = ["Analytics", "Figure", "Period", "StageCell", "StuckRecord", "stuck_condition", "period_at", "point_name", "split_period", "stage_condition", "within_condition"]
