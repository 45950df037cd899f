"""Examples of a user's own code for torchgrow (run from the repository's root)."""
