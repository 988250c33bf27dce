"""Built-in question sets, generated deterministically, each answer computed or looked up by an oracle."""
