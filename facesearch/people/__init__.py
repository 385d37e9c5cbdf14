"""Stage 6, people: faces grouped into persons (clustering), named once, with corrections that stick."""
