"""Stage 1, photos: find them in folders, decode them (EXIF-rotated, guarded), identity folders, synthetic faces."""
