"""The signed-in user: the seed's protected example, the profile, the password, the sessions."""

from __future__ import annotations

import uuid

from quart import Blueprint, request
from quart_schema import tag_blueprint, validate_querystring

from service.core.errors import (
    FreshTokenRequired,
    HashingBusy,
    InvalidCredentials,
    NotFound,
    TooManyAttempts,
    UserExists,
)
from service.web.guards import (
    current_claims,
    current_user,
    fresh_required,
    require_fresh,
    roles_required,
    token_required,
)
from service.web.http import (
    ModelResponse,
    documents_errors,
    documents_no_content,
    responds,
    validate_body,
)
from service.web.schemas import (
    AdminUsersQuery,
    PasswordChange,
    ProfileUpdate,
    ProtectedOut,
    SessionList,
    SessionOut,
    UserList,
    UserOut,
)
from service.web.state import get_accounts
from service.web.transport import client_info

blueprint = Blueprint("users", __name__)
tag_blueprint(blueprint, ["users"])


@blueprint.get("/protected")
@token_required
@responds(ProtectedOut, 200)
async def protected() -> ProtectedOut:
    """The seed's example of a guarded route"""
    return ProtectedOut.model_validate(current_user())


@blueprint.get("/me")
@token_required
@responds(UserOut, 200)
async def me() -> UserOut:
    """The signed-in user"""
    return UserOut.model_validate(current_user())


@blueprint.patch("/me")
@token_required
@validate_body(ProfileUpdate)
@responds(UserOut, 200)
@documents_errors(UserExists, FreshTokenRequired)
async def update_me(data: ProfileUpdate) -> UserOut:
    """Change your name or email

    Changing the email needs a fresh token (from a password login). Send `"name": null` to
    clear the name.
    """
    if data.email is not None and data.email.lower() != current_user().email:
        require_fresh(current_claims())
    user = await get_accounts().update_profile(
        current_user().id,
        name=data.name,
        email=data.email,
        clear_name="name" in data.model_fields_set and data.name is None,
    )
    return UserOut.model_validate(user)


@blueprint.post("/me/password")
@fresh_required
@validate_body(PasswordChange)
@documents_errors(InvalidCredentials, TooManyAttempts, HashingBusy)
@documents_no_content
async def change_password(data: PasswordChange) -> tuple[str, int]:
    """Change your password (fresh token required)

    Every other session is revoked; this one stays signed in.
    """
    await get_accounts().change_password(
        current_user(),
        current_password=data.current_password,
        new_password=data.new_password,
        keep_session=current_claims().session_uuid,
        client=client_info(),
    )
    return "", 204


@blueprint.get("/sessions")
@token_required
@responds(SessionList, 200)
async def sessions() -> SessionList:
    """Your sessions (devices): one per login, with when and from where"""
    current = current_claims().session_id
    families = await get_accounts().list_sessions(current_user())
    return SessionList(
        [
            SessionOut.model_validate(family).model_copy(
                update={"current": str(family.id) == current}
            )
            for family in families
        ]
    )


@blueprint.delete("/sessions/<uuid:session_id>")
@token_required
@documents_errors(NotFound)
@documents_no_content
async def revoke_session(session_id: uuid.UUID) -> tuple[str, int]:
    """Sign out one session (device): its refresh and access tokens stop working"""
    await get_accounts().revoke_session(current_user(), session_id)
    return "", 204


@blueprint.get("/users/<uuid:user_id>")
@token_required
@responds(UserOut, 200)
@documents_errors(NotFound)
async def user_by_id(user_id: uuid.UUID) -> UserOut:
    """A user by id: yourself, or anyone for an admin

    Other users are answered 404, whether or not they exist.
    """
    user = current_user()
    if user.id == user_id:
        return UserOut.model_validate(user)
    if "admin" not in current_claims().roles:
        raise NotFound()
    return UserOut.model_validate(await get_accounts().get_user(user_id))


@blueprint.get("/admin/users")
@roles_required("admin")
@validate_querystring(AdminUsersQuery)
@responds(UserList, 200)
async def admin_users(query_args: AdminUsersQuery) -> ModelResponse:
    """All users, for admins, in pages

    `limit` (1 to 200, default 50) users after `cursor`; the next page's cursor is in the
    `Link: <...>; rel="next"` header (and `X-Next-Cursor`) while there are more.
    """
    users = await get_accounts().list_users(limit=query_args.limit + 1, after=query_args.cursor)
    page, more = users[: query_args.limit], len(users) > query_args.limit
    headers: dict[str, str] = {}
    if more:
        cursor = str(page[-1].id)
        link = f"{request.path}?limit={query_args.limit}&cursor={cursor}"
        headers = {"Link": f'<{link}>; rel="next"', "X-Next-Cursor": cursor}
    return UserList([UserOut.model_validate(user) for user in page]), 200, headers
