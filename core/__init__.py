"""Settings and domain types shared by every layer."""
