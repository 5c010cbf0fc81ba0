"""Access to the model page: the Airflow API server's own login (JWT from header or cookie) and auth manager."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False)


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Any:
    """
    The logged-in Airflow user, resolved exactly as the Airflow REST API resolves it.

    A ``Authorization: Bearer <jwt>`` header wins over the UI's ``_token`` cookie; no token is 401, an invalid
    one 403. The user must then be allowed to see the Airflow UI (``AccessView.WEBSITE``) by the configured
    auth manager, or the request is 403. Airflow's security module is imported here, not at plugin load,
    because the scheduler loads the plugin too.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    user = await get_user(request, None, credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="Forbidden")
    return user


UserDep = Annotated[Any, Depends(current_user)]


def login_url(request: Request) -> str:
    """The auth manager's login page, returning to the requested page afterwards."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=str(request.url))
