"""Encryption at rest (storage/encryption.py) and its settings."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from core.settings import DEV_ENCRYPTION_KEY, ConsumptionSettings, Settings
from storage.encryption import SecretBox, SecretUnreadable, box_for
from tests.support.secrets import CONSUMPTION

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_encrypts_with_the_primary_and_decrypts_with_any() -> None:
    old_box = SecretBox({"k1": OLD})
    ciphertext, key_id = old_box.encrypt("upstream-secret")
    assert key_id == "k1" and "upstream-secret" not in ciphertext
    rotated_box = SecretBox({"k2": NEW, "k1": OLD})
    assert rotated_box.decrypt(ciphertext) == "upstream-secret"
    again, again_id = rotated_box.rotate(ciphertext)
    assert again_id == "k2" and SecretBox({"k2": NEW}).decrypt(again) == "upstream-secret"
    with pytest.raises(SecretUnreadable) as raised:
        SecretBox({"k2": NEW}).decrypt(ciphertext)
    assert "upstream" not in str(raised.value)
    assert SecretBox({"k1": OLD, "k2": NEW}, primary="k2").encrypt("x")[1] == "k2"
    assert OLD not in repr(rotated_box)


def test_settings_check_keys_and_refuse_placeholders_outside_development() -> None:
    with pytest.raises(ValidationError, match="Fernet key"):
        ConsumptionSettings(encryption_keys={"k1": SecretStr("too-short")})
    with pytest.raises(ValidationError, match="not one of"):
        ConsumptionSettings(encryption_keys={"k1": SecretStr(OLD)}, encryption_key_id="k9")
    auth = {"jwt_secret": "j" * 40}
    with pytest.raises(ValidationError, match="key_pepper"):
        Settings(environment="test", auth=auth)
    with pytest.raises(ValidationError, match="encryption_keys"):
        Settings(environment="test", auth=auth, consumption={"key_pepper": "p" * 40})
    dev_key_too = {"key_pepper": "p" * 40, "encryption_keys": {"new": NEW, "old": DEV_ENCRYPTION_KEY}}
    with pytest.raises(ValidationError, match="encryption_keys"):
        Settings(environment="test", auth=auth, consumption=dev_key_too)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(
            environment="production",
            auth=auth,
            database={"url": "postgresql+psycopg://x/y"},
            consumption={"key_pepper": "short", "encryption_keys": {"k": NEW}},
        )
    assert Settings(environment="test", auth=auth, consumption=CONSUMPTION).consumption.uses_placeholders() == []


def test_the_box_is_built_once_per_configuration() -> None:
    assert box_for(CONSUMPTION) is box_for(CONSUMPTION)
    assert box_for(CONSUMPTION).primary == "t1"
