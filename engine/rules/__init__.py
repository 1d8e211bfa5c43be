"""Expressions, rule decisions, routing, SLA and time. Imports the metamodel, never runtime."""

from engine.rules.expressions import FUNCTION_DOCS, FUNCTION_NAMES, Evaluator, ExpressionError
from engine.rules.time import Clock, FakeClock, SystemClock

__all__ = ["Clock", "Evaluator", "ExpressionError", "FUNCTION_DOCS", "FUNCTION_NAMES", "FakeClock", "SystemClock"]
