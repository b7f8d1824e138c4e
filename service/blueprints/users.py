"""The signed-in user: the seed's protected example, the user object, a user by id."""

from __future__ import annotations

import uuid

from quart import Blueprint
from quart_schema import tag_blueprint, validate_response

from service import auth
from service.errors import NotFound
from service.guards import current_user, token_required
from service.http import documents_errors
from service.schemas import ProtectedOut, UserOut
from service.state import get_state

blueprint = Blueprint("users", __name__)
tag_blueprint(blueprint, ["users"])


@blueprint.get("/protected")
@token_required
@validate_response(ProtectedOut, 200)
async def protected() -> ProtectedOut:
    """The seed's example of a guarded route"""
    return ProtectedOut.model_validate(current_user())


@blueprint.get("/me")
@token_required
@validate_response(UserOut, 200)
async def me() -> UserOut:
    """The signed-in user"""
    return UserOut.model_validate(current_user())


@blueprint.get("/users/<uuid:user_id>")
@token_required
@validate_response(UserOut, 200)
@documents_errors(NotFound)
async def user_by_id(user_id: uuid.UUID) -> UserOut:
    """A user by id: yourself, or anyone for an admin

    Other users are answered 404, whether or not they exist.
    """
    user = current_user()
    if user.id == user_id:
        return UserOut.model_validate(user)
    if "admin" not in user.roles:
        raise NotFound()
    return UserOut.model_validate(await auth.get_user(get_state().database, user_id))
