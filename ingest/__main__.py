import sys

from liveness.cli import main

sys.exit(main(["ingest", *sys.argv[1:]]))
