"""Real (non-placeholder) consumption secrets, for settings built outside development."""

from __future__ import annotations

from pydantic import SecretStr

from core.settings import ConsumptionSettings

TEST_PEPPER = "a-test-key-pepper-of-more-than-32-characters"
TEST_ENCRYPTION_KEY = "dGVzdC1lbmNyeXB0aW9uLWtleS0wMDAwMDAwMDAwMDA="  # base64 of 32 bytes, not the dev key

CONSUMPTION = ConsumptionSettings(
    key_pepper=SecretStr(TEST_PEPPER), encryption_keys={"t1": SecretStr(TEST_ENCRYPTION_KEY)}
)
