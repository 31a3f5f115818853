import sys

from nncompress.cli import main

sys.exit(main())
