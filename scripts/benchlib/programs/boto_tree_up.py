"""boto_tree_up.py SRC BUCKET PREFIX: every file of a flat folder, 16 uploads at a time."""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

from boto_client import s3

src, bucket, prefix = sys.argv[1:4]
names = sorted(os.listdir(src))
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda n: s3.upload_file(os.path.join(src, n), bucket, prefix + n), names))
