"""boto_download.py DST BUCKET KEY: one download_file."""

import sys

from boto_client import s3

s3.download_file(sys.argv[2], sys.argv[3], sys.argv[1])
