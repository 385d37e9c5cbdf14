"""Stage 2, faces: detect every face in a photo, reconcile boxes, align to chips (the one chip assembly)."""
