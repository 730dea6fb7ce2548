"""The merchant's web side: NAVER Pay registration (demo page, ``returnUrl``, CHANGE).

``create_app`` builds the ASGI app (``npay-billing web`` serves it); ``Registrar`` completes
registrations (also used by ``npay-billing registrations complete``).
"""

from worker.web.app import create_app
from worker.web.config import WebSettings
from worker.web.registration import Outcome, Registrar

__all__ = ["Outcome", "Registrar", "WebSettings", "create_app"]
