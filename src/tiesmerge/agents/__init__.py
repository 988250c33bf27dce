"""Answer and question agents for the tournament, on a base plus a merged adapter."""
