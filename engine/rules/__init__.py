"""Expressions, rule decisions, routing, SLA and time. Imports the metamodel, never runtime."""

from engine.rules.clock import Clock, FakeClock, SystemClock
from engine.rules.expressions import FUNCTION_DOCS, FUNCTION_NAMES, Evaluator, ExpressionError

__all__ = ["Clock", "Evaluator", "ExpressionError", "FUNCTION_DOCS", "FUNCTION_NAMES", "FakeClock", "SystemClock"]
