"""Server-rendered screens (Starlette + Jinja2): lists, record pages, forms, boards, users admin.

Every screen renders a documented context dataclass (contexts.py); every write goes through
RecordService; widgets draw and read fields (engine/runtime/widgets.py).
"""

from engine.runtime.web.screens.routes import ScreenRoutes, error_page, not_found_page
from engine.runtime.web.screens.security import SecurityHeadersMiddleware

__all__ = ["ScreenRoutes", "SecurityHeadersMiddleware", "error_page", "not_found_page"]
