"""The node's web console for auditors, admins and local systems (issue 10; docs/console.md).

``gateway.api.local_api`` builds one :class:`ConsoleSessions`, hands it to the authentication
middleware (so the route table decides who opens which page) and mounts :func:`console_app`
at ``/console``. With ``[oidc.console]`` configured the login page also offers the OpenID
Connect code flow with PKCE (oidc.py).
"""

from .app import console_app
from .sessions import ConsoleSessions

__all__ = ["ConsoleSessions", "console_app"]
