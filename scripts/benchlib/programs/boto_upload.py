"""boto_upload.py SRC BUCKET KEY: one upload_file."""

import sys

from boto_client import s3

s3.upload_file(sys.argv[1], sys.argv[2], sys.argv[3])
