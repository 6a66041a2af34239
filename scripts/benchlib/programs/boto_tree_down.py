"""boto_tree_down.py DST BUCKET PREFIX: every object under PREFIX, 16 downloads at a time."""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

from boto_client import s3

dst, bucket, prefix = sys.argv[1:4]
os.makedirs(dst, exist_ok=True)
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
        Prefix=prefix) for o in page.get("Contents", [])]
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda k: s3.download_file(bucket, k, os.path.join(dst, k[len(prefix):])),
                  keys))
