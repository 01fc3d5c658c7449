import sys

from liveness.app.cli import main

sys.exit(main())
