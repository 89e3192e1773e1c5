#!/usr/bin/env python3
"""Writes a benchmark library: COUNT files of SIZE bytes under MEDIA, shaped
like gallery originals, and prints the asset rows as CSV on stdout
(id, ownerId, path, sha1 hex, size) for psql's COPY."""
import hashlib
import os
import sys
import uuid

media, owner, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
seed = os.urandom(size)
for i in range(count):
    asset = uuid.uuid4()
    h = asset.hex
    folder = os.path.join(media, "upload", owner, h[0:2], h[2:4])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{asset}.jpg")
    # Distinct content per file without paying for os.urandom each time.
    data = i.to_bytes(8, "little") + seed[8:]
    with open(path, "wb") as f:
        f.write(data)
    print(f"{asset},{owner},{path},{hashlib.sha1(data).hexdigest()},{len(data)}")
