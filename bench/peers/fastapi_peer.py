"""FastAPI + PyJWT + async SQLAlchemy (aiosqlite) benchmark peer.

Served by uvicorn with 2 workers:
    uvicorn --workers 2 --no-access-log --host 127.0.0.1 --port PORT fastapi_peer:app
Environment: BENCH_DB (SQLite file path), BENCH_JWT_SECRET.
`python fastapi_peer.py init USERNAME EMAIL` creates the tables and a user (password on stdin).
Passwords: bcrypt (cost 12) in the thread pool, as the seed design.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import bcrypt
import jwt
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import String, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SECRET = os.environ.get("BENCH_JWT_SECRET", "x" * 48)
ALGORITHM = "HS256"
DATABASE = os.environ.get("BENCH_DB") or str(Path(tempfile.gettempdir()) / "fastapi.db")
engine = create_async_engine("sqlite+aiosqlite:///" + DATABASE)
Session = async_sessionmaker(engine, expire_on_commit=False)
app = FastAPI()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(128))


class Credentials(BaseModel):
    username: str
    password: str


class SignupIn(Credentials):
    email: str


class UserOut(BaseModel):
    id: str
    username: str


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"


async def get_session() -> AsyncIterator[AsyncSession]:
    async with Session() as session:
        yield session


DB = Annotated[AsyncSession, Depends(get_session)]


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(12)).decode()


async def current_user(request: Request, session: DB) -> User:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "token missing", headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(
            token, SECRET, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        raise HTTPException(401, "token invalid", headers={"WWW-Authenticate": "Bearer"}) from None
    user = (
        await session.execute(select(User).where(User.public_id == claims["sub"]))
    ).scalar_one_or_none()
    if user is None:
        raise HTTPException(401, "unknown user", headers={"WWW-Authenticate": "Bearer"})
    return user


async def signup(body: SignupIn, session: DB) -> UserOut:
    taken = await session.execute(
        select(User.id).where(or_(User.username == body.username, User.email == body.email))
    )
    if taken.first():
        raise HTTPException(409, "user exists")
    user = User(
        public_id=str(uuid.uuid4()),
        username=body.username,
        email=body.email.lower(),
        password_hash=await run_in_threadpool(_hash, body.password),
    )
    session.add(user)
    await session.commit()
    return UserOut(id=user.public_id, username=user.username)


async def login(body: Credentials, session: DB) -> TokenOut:
    user = (
        await session.execute(select(User).where(User.username == body.username))
    ).scalar_one_or_none()
    ok = user is not None and await run_in_threadpool(
        bcrypt.checkpw, body.password.encode(), user.password_hash.encode()
    )
    if not ok or user is None:
        raise HTTPException(401, "invalid credentials")
    now = int(time.time())
    claims = {"sub": user.public_id, "iat": now, "exp": now + 900, "jti": uuid.uuid4().hex}
    return TokenOut(access_token=jwt.encode(claims, SECRET, algorithm=ALGORITHM))


async def protected(user: Annotated[User, Depends(current_user)]) -> UserOut:
    return UserOut(id=user.public_id, username=user.username)


# The routes, as @app.post(...) / @app.get(...) would add them (the call form: FastAPI is
# untyped where mypy runs, and an untyped decorator would untype the views).
app.add_api_route("/signup", signup, methods=["POST"], status_code=201, response_model=UserOut)
app.add_api_route("/login", login, methods=["POST"], response_model=TokenOut)
app.add_api_route("/protected", protected, methods=["GET"], response_model=UserOut)


async def _init(username: str, email: str) -> None:
    password = sys.stdin.readline().rstrip("\r\n")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with Session() as session:
        session.add(
            User(
                public_id=str(uuid.uuid4()),
                username=username,
                email=email,
                password_hash=_hash(password),
            )
        )
        await session.commit()
    await engine.dispose()


if __name__ == "__main__" and sys.argv[1:2] == ["init"]:
    asyncio.run(_init(sys.argv[2], sys.argv[3]))
