"""Expressions, rule decisions, routing, SLA and time. Imports the metamodel, never runtime."""

from engine.rules.expressions import Evaluator
from engine.rules.functions import (FUNCTION_DOCS, FUNCTION_NAMES, ExpressionError, ExpressionFunction, FunctionDoc,
                                    FunctionLibrary)
from engine.rules.time import Clock, FakeClock, SystemClock

__all__ = ["Clock", "Evaluator", "ExpressionError", "ExpressionFunction", "FUNCTION_DOCS", "FUNCTION_NAMES",
           "FakeClock", "FunctionDoc", "FunctionLibrary", "SystemClock"]
