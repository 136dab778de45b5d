import sys

from colormamba.cli import main

sys.exit(main())
