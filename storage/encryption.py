"""Encryption at rest of provider credentials and signing secrets (Fernet: AES-128-CBC + HMAC-SHA256).

Keys come from configuration (`MARKETPLACE_CONSUMPTION__ENCRYPTION_KEYS`, a JSON object of key id →
Fernet key), never from the database. The primary key encrypts; every configured key decrypts
(MultiFernet), so rotating is: put a new key first, deploy, run
`python -m storage.encryption rotate` (re-encrypts every row with the new key, recording its id),
then drop the old key. Plaintext never appears in an exception, a repr or a log line.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.settings import ConsumptionSettings, get_settings


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with any configured key (a key was dropped too early)."""


class SecretBox:
    """Encrypts with the primary key, decrypts with any configured key."""

    def __init__(self, keys: Mapping[str, str], primary: str | None = None) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self.primary = primary or next(iter(keys))
        ordered = [keys[self.primary], *(key for key_id, key in keys.items() if key_id != self.primary)]
        self._primary = Fernet(keys[self.primary])
        self._all = MultiFernet([Fernet(key) for key in ordered])

    @classmethod
    def from_settings(cls, settings: ConsumptionSettings) -> SecretBox:
        keys = {key_id: key.get_secret_value() for key_id, key in settings.encryption_keys.items()}
        return cls(keys, settings.encryption_key_id)

    def __repr__(self) -> str:
        return f"SecretBox(primary={self.primary!r})"

    def encrypt(self, plaintext: str) -> tuple[str, str]:
        """(ciphertext, id of the key that made it)."""
        return self._primary.encrypt(plaintext.encode()).decode(), self.primary

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._all.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable("a stored secret cannot be decrypted with the configured keys") from None

    def rotate(self, ciphertext: str) -> tuple[str, str]:
        """The same secret encrypted with the primary key."""
        try:
            return self._all.rotate(ciphertext.encode()).decode(), self.primary
        except InvalidToken:
            raise SecretUnreadable("a stored secret cannot be decrypted with the configured keys") from None


@lru_cache(maxsize=4)
def _box(keys: tuple[tuple[str, str], ...], primary: str | None) -> SecretBox:
    return SecretBox(dict(keys), primary)


def box_for(settings: ConsumptionSettings) -> SecretBox:
    """The box for these settings, built once (Fernet key set-up is not free on a hot path)."""
    keys = tuple((key_id, key.get_secret_value()) for key_id, key in settings.encryption_keys.items())
    return _box(keys, settings.encryption_key_id)


def rotate_all(session: Session, box: SecretBox) -> int:
    """Re-encrypt every stored secret not yet under the primary key; returns how many rows changed."""
    from storage.models import ServiceCredential, SigningSecret

    rows: list[ServiceCredential | SigningSecret] = [
        *session.scalars(select(ServiceCredential).where(ServiceCredential.key_id != box.primary).with_for_update()),
        *session.scalars(select(SigningSecret).where(SigningSecret.key_id != box.primary).with_for_update()),
    ]
    for row in rows:
        row.ciphertext, row.key_id = box.rotate(row.ciphertext)
    session.flush()
    return len(rows)


def main() -> None:
    """Command line: re-encrypt stored secrets with the primary key."""
    parser = argparse.ArgumentParser(description="Encryption at rest of provider credentials and signing secrets.")
    parser.add_argument("command", choices=["rotate"], help="rotate: re-encrypt every row with the primary key")
    parser.parse_args()
    from storage.database import session_scope

    box = box_for(get_settings().consumption)
    with session_scope() as session:
        changed = rotate_all(session, box)
    print(f"re-encrypted {changed} secret(s) with key {box.primary!r}")


if __name__ == "__main__":
    main()
