"""Stage 0, under everything: errors, atomic writes, paths and settings, the journal, the arithmetic rule."""
