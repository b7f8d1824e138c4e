"""The seed design as a benchmark peer: Flask + Flask-JWT-Extended + Flask-SQLAlchemy + bcrypt.

Served by gunicorn with 2 sync workers:
    gunicorn -w 2 -b 127.0.0.1:PORT flask_seed:app
Environment: BENCH_DB (SQLite file path), BENCH_JWT_SECRET.
`python flask_seed.py init USERNAME EMAIL` creates the tables and a user (password on stdin).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import bcrypt
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from flask_jwt_extended import JWTManager, create_access_token, current_user, jwt_required
from flask_sqlalchemy import SQLAlchemy

DATABASE = os.environ.get("BENCH_DB") or str(Path(tempfile.gettempdir()) / "flask_seed.db")
app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + DATABASE
app.config["JWT_SECRET_KEY"] = os.environ.get("BENCH_JWT_SECRET", "x" * 48)
db = SQLAlchemy(app)
jwt = JWTManager(app)


class User(db.Model):  # type: ignore[misc, name-defined]  # no Flask-SQLAlchemy for mypy
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    public_id = db.Column(db.String(36), unique=True, nullable=False, index=True)
    username = db.Column(db.String(32), unique=True, nullable=False)
    email = db.Column(db.String(255), unique=True, nullable=False)
    password_hash = db.Column(db.String(128), nullable=False)


def hash_password(password: str) -> str:
    # bcrypt.gensalt() defaults to 12 rounds, flask-bcrypt's default BCRYPT_LOG_ROUNDS.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(12)).decode()


def load_user(_header: dict[str, Any], data: dict[str, Any]) -> User | None:
    # The per-request user lookup of the seed design.
    query = db.select(User).filter_by(public_id=data["sub"])
    user: User | None = db.session.execute(query).scalar_one_or_none()
    return user


jwt.user_lookup_loader(load_user)


@app.post("/signup")
def signup() -> ResponseReturnValue:
    data = request.get_json(silent=True) or {}
    username, email, password = data.get("username"), data.get("email"), data.get("password")
    if not username or not email or not password:
        return jsonify(message="username, email and password are required"), 422
    if db.session.execute(
        db.select(User).where((User.username == username) | (User.email == email))
    ).first():
        return jsonify(message="user exists"), 409
    user = User(
        public_id=str(uuid.uuid4()),
        username=username,
        email=email.lower(),
        password_hash=hash_password(password),
    )
    db.session.add(user)
    db.session.commit()
    return jsonify(id=user.public_id, username=user.username, email=user.email), 201


@app.post("/login")
def login() -> ResponseReturnValue:
    data = request.get_json(silent=True) or request.form
    username, password = data.get("username", ""), data.get("password", "")
    user = db.session.execute(db.select(User).filter_by(username=username)).scalar_one_or_none()
    if user is None or not bcrypt.checkpw(password.encode(), user.password_hash.encode()):
        return jsonify(message="invalid credentials"), 401
    return jsonify(access_token=create_access_token(identity=user.public_id))


def protected() -> ResponseReturnValue:
    return jsonify(id=current_user.public_id, username=current_user.username)


# As @app.get("/protected") over @jwt_required(): the call form, as the decorator is untyped.
app.add_url_rule("/protected", view_func=jwt_required()(protected), methods=["GET"])


def _init(username: str, email: str) -> None:
    password = sys.stdin.readline().rstrip("\r\n")
    with app.app_context():
        db.create_all()
        db.session.add(
            User(
                public_id=str(uuid.uuid4()),
                username=username,
                email=email,
                password_hash=hash_password(password),
            )
        )
        db.session.commit()


if __name__ == "__main__" and sys.argv[1:2] == ["init"]:
    _init(sys.argv[2], sys.argv[3])
