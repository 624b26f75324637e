"""Operations tools: backup and restore of every store (docs/operations.md)."""
